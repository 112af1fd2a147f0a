//! `pad`: finite-difference gradients for pads of one or several dims, negative pads (crops)
//! and nonzero values.

use kiln_autograd::gradcheck::{check_gradients, uniform};

#[test]
fn gradcheck_pad() {
    let cases: &[(&[usize], &[isize], f32)] = &[
        (&[5], &[2, 1], 0.0),
        (&[3, 4], &[0, 1, 0, 1], 0.0),
        (&[2, 3, 4], &[1, -1, -1, 2], 1.5),
        (&[1, 2, 3, 3], &[-1, 0, 1, 1, 0, 0, 1, 0], -3.0),
        (&[2, 3], &[0, -3], 0.0),
    ];
    for (i, &(shape, pads, value)) in cases.iter().enumerate() {
        let x = uniform(shape, -1.0, 1.0, i as u64 + 1);
        check_gradients(&[x], |t| t[0].try_pad(pads, value)).unwrap_or_else(|e| panic!("case {i}: {e}"));
    }
}
