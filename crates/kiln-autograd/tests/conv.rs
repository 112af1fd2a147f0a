//! conv1d, conv2d and conv_transpose2d: finite-difference gradient checks over stride,
//! padding, dilation, groups (depthwise, with a channel multiplier), output padding, 1x1
//! kernels, odd sizes, with and without bias; and that backward computes only what is needed.

use kiln_autograd::gradcheck::{check_gradients, uniform};
use kiln_autograd::ops::conv::{
    conv1d, conv2d, conv_transpose2d, Conv1dOptions, Conv2dOptions, ConvTranspose2dOptions,
};
use kiln_autograd::Tensor;

#[test]
fn gradcheck_conv2d() {
    // (input, weight, stride, padding, dilation, groups)
    type Case = ([usize; 4], [usize; 4], [usize; 2], [usize; 2], [usize; 2], usize);
    let cases: [Case; 10] = [
        ([2, 2, 5, 5], [3, 2, 3, 3], [1, 1], [1, 1], [1, 1], 1),
        ([1, 3, 7, 6], [2, 3, 3, 2], [2, 1], [1, 0], [1, 1], 1),
        ([1, 2, 7, 7], [2, 2, 3, 3], [1, 1], [2, 2], [2, 2], 1),
        ([2, 4, 5, 4], [4, 2, 3, 3], [1, 1], [1, 1], [1, 1], 2),
        ([1, 3, 5, 5], [3, 1, 3, 3], [1, 1], [1, 1], [1, 1], 3),
        ([1, 3, 6, 5], [6, 1, 3, 3], [2, 2], [1, 1], [1, 1], 3),
        ([1, 4, 9, 8], [4, 2, 3, 2], [2, 3], [2, 1], [2, 1], 2),
        ([2, 3, 4, 3], [4, 3, 1, 1], [1, 1], [0, 0], [1, 1], 1),
        ([1, 2, 5, 5], [2, 2, 1, 1], [2, 2], [1, 1], [1, 1], 1),
        ([1, 1, 3, 3], [1, 1, 3, 3], [1, 1], [0, 0], [1, 1], 1),
    ];
    for (i, &(xs, ws, s, p, d, g)) in cases.iter().enumerate() {
        let seed = i as u64 * 10;
        let o = Conv2dOptions::default().stride(s).padding(p).dilation(d).groups(g);
        let x = uniform(&xs, -1.0, 1.0, seed + 1);
        let w = uniform(&ws, -1.0, 1.0, seed + 2);
        let b = uniform(&[ws[0]], -1.0, 1.0, seed + 3);
        check_gradients(&[x.clone(), w.clone(), b], |t| conv2d(&t[0], &t[1], Some(&t[2]), &o))
            .unwrap_or_else(|e| panic!("case {i}: {e}"));
        check_gradients(&[x, w], |t| conv2d(&t[0], &t[1], None, &o)).unwrap_or_else(|e| panic!("case {i}: {e}"));
    }
}

#[test]
fn gradcheck_conv2d_padding_end_and_depthwise() {
    // (input, weight, stride, padding before, padding after, dilation, groups): TF "SAME"
    // paddings (one more zero after), less after than before, depthwise (direct kernels) with
    // strides 1 and 2 and a channel multiplier, and a 1x1 kernel with padding only after.
    type Case = ([usize; 4], [usize; 4], [usize; 2], [usize; 2], [usize; 2], [usize; 2], usize);
    let cases: [Case; 8] = [
        ([2, 3, 6, 6], [3, 1, 3, 3], [2, 2], [0, 0], [1, 1], [1, 1], 3),
        ([1, 2, 7, 8], [2, 1, 5, 5], [2, 2], [2, 1], [2, 2], [1, 1], 2),
        ([1, 2, 5, 5], [4, 1, 3, 3], [1, 1], [1, 1], [1, 1], [1, 1], 2),
        ([1, 3, 7, 5], [3, 1, 3, 2], [3, 2], [1, 0], [0, 1], [2, 1], 3),
        ([1, 2, 6, 6], [3, 2, 3, 3], [2, 2], [0, 0], [1, 1], [1, 1], 1),
        ([1, 2, 5, 6], [2, 2, 3, 3], [1, 2], [2, 1], [0, 1], [1, 1], 1),
        ([1, 2, 3, 4], [3, 2, 1, 1], [1, 1], [0, 0], [1, 2], [1, 1], 1),
        ([1, 2, 5, 5], [6, 1, 3, 3], [2, 2], [0, 1], [1, 0], [1, 1], 2),
    ];
    for (i, &(xs, ws, s, p, pe, d, g)) in cases.iter().enumerate() {
        let seed = 50 + i as u64 * 10;
        let o = Conv2dOptions::default().stride(s).padding(p).padding_end(pe).dilation(d).groups(g);
        let x = uniform(&xs, -1.0, 1.0, seed + 1);
        let w = uniform(&ws, -1.0, 1.0, seed + 2);
        let b = uniform(&[ws[0]], -1.0, 1.0, seed + 3);
        check_gradients(&[x.clone(), w.clone(), b], |t| conv2d(&t[0], &t[1], Some(&t[2]), &o))
            .unwrap_or_else(|e| panic!("case {i}: {e}"));
        check_gradients(&[x, w], |t| conv2d(&t[0], &t[1], None, &o)).unwrap_or_else(|e| panic!("case {i}: {e}"));
    }
}

#[test]
fn padding_end_equals_pad_then_conv() {
    // (input, weight, stride, padding before, padding after, groups)
    type Case = ([usize; 4], [usize; 4], [usize; 2], [usize; 2], [usize; 2], usize);
    let cases: [Case; 4] = [
        ([2, 4, 8, 8], [4, 1, 3, 3], [2, 2], [0, 0], [1, 1], 4),
        ([1, 3, 9, 10], [3, 1, 5, 5], [2, 2], [2, 1], [2, 2], 3),
        ([2, 3, 7, 6], [5, 3, 3, 3], [2, 1], [1, 0], [0, 2], 1),
        ([1, 2, 4, 5], [3, 2, 1, 1], [1, 1], [0, 1], [2, 0], 1),
    ];
    let grads =
        |ts: &[&Tensor]| -> Vec<Vec<f32>> { ts.iter().map(|t| t.grad().unwrap().to_vec_f32().unwrap()).collect() };
    for (i, &(xs, ws, s, p, pe, g)) in cases.iter().enumerate() {
        let seed = 300 + i as u64 * 10;
        let leaf =
            |shape: &[usize], k: u64| Tensor::from_array(uniform(shape, -1.0, 1.0, seed + k)).requires_grad_(true);
        let (x, w, b) = (leaf(&xs, 1), leaf(&ws, 2), leaf(&[ws[0]], 3));
        let gy = |y: &Tensor| Tensor::from_array(uniform(y.shape(), -1.0, 1.0, seed + 4));
        let o = Conv2dOptions::default().stride(s).padding(p).padding_end(pe).groups(g);
        let y = conv2d(&x, &w, Some(&b), &o).unwrap();
        y.try_mul(&gy(&y)).unwrap().sum_all().backward().unwrap();
        let want_grads = grads(&[&x, &w, &b]);
        let (x2, w2, b2) = (leaf(&xs, 1), leaf(&ws, 2), leaf(&[ws[0]], 3));
        let pads = [p[1], pe[1], p[0], pe[0]].map(|v| v as isize);
        let o2 = Conv2dOptions::default().stride(s).groups(g);
        let y2 = conv2d(&x2.try_pad(&pads, 0.0).unwrap(), &w2, Some(&b2), &o2).unwrap();
        y2.try_mul(&gy(&y2)).unwrap().sum_all().backward().unwrap();
        assert_eq!(y.shape(), y2.shape(), "case {i}");
        let close = |a: &[f32], b: &[f32], what: &str| {
            for (u, v) in a.iter().zip(b) {
                assert!((u - v).abs() < 1e-5 * (1.0 + v.abs()), "case {i} {what}: {u} vs {v}");
            }
        };
        close(&y.to_vec_f32().unwrap(), &y2.to_vec_f32().unwrap(), "output");
        for (k, (a, b)) in want_grads.iter().zip(grads(&[&x2, &w2, &b2])).enumerate() {
            close(a, &b, ["dx", "dw", "db"][k]);
        }
    }
}

#[test]
fn gradcheck_conv1d() {
    // (input, weight, stride, padding, dilation, groups)
    type Case = ([usize; 3], [usize; 3], usize, usize, usize, usize);
    let cases: [Case; 5] = [
        ([2, 3, 7], [2, 3, 3], 1, 0, 1, 1),
        ([1, 2, 9], [3, 2, 3], 2, 1, 2, 1),
        ([2, 4, 6], [4, 2, 3], 1, 1, 1, 2),
        ([1, 3, 5], [6, 1, 2], 1, 1, 1, 3),
        ([1, 2, 4], [3, 2, 1], 1, 0, 1, 1),
    ];
    for (i, &(xs, ws, s, p, d, g)) in cases.iter().enumerate() {
        let seed = 100 + i as u64 * 10;
        let o = Conv1dOptions::default().stride(s).padding(p).dilation(d).groups(g);
        let x = uniform(&xs, -1.0, 1.0, seed + 1);
        let w = uniform(&ws, -1.0, 1.0, seed + 2);
        let b = uniform(&[ws[0]], -1.0, 1.0, seed + 3);
        check_gradients(&[x.clone(), w.clone(), b], |t| conv1d(&t[0], &t[1], Some(&t[2]), &o))
            .unwrap_or_else(|e| panic!("case {i}: {e}"));
        check_gradients(&[x, w], |t| conv1d(&t[0], &t[1], None, &o)).unwrap_or_else(|e| panic!("case {i}: {e}"));
    }
}

#[test]
fn gradcheck_conv_transpose2d() {
    // (input, weight [Cin, Cout/g, kh, kw], stride, padding, output_padding, dilation, groups)
    type Case = ([usize; 4], [usize; 4], [usize; 2], [usize; 2], [usize; 2], [usize; 2], usize);
    let cases: [Case; 8] = [
        ([1, 2, 3, 3], [2, 3, 3, 3], [1, 1], [0, 0], [0, 0], [1, 1], 1),
        ([2, 2, 3, 4], [2, 2, 3, 3], [2, 2], [1, 1], [1, 1], [1, 1], 1),
        ([1, 4, 3, 3], [4, 1, 3, 2], [2, 3], [0, 1], [1, 2], [1, 1], 2),
        ([1, 2, 3, 3], [2, 2, 3, 3], [2, 2], [1, 1], [1, 1], [2, 2], 1),
        ([1, 3, 3, 2], [3, 2, 1, 1], [1, 1], [0, 0], [0, 0], [1, 1], 1),
        ([1, 3, 4, 3], [3, 2, 2, 2], [1, 1], [0, 0], [1, 1], [2, 2], 3),
        ([1, 3, 3, 3], [3, 1, 3, 3], [2, 2], [1, 1], [0, 0], [1, 1], 3),
        ([1, 3, 3, 2], [3, 2, 1, 1], [1, 1], [0, 0], [1, 1], [2, 2], 1),
    ];
    for (i, &(xs, ws, s, p, op, d, g)) in cases.iter().enumerate() {
        let seed = 200 + i as u64 * 10;
        let o = ConvTranspose2dOptions { stride: s, padding: p, output_padding: op, dilation: d, groups: g };
        let x = uniform(&xs, -1.0, 1.0, seed + 1);
        let w = uniform(&ws, -1.0, 1.0, seed + 2);
        let b = uniform(&[ws[1] * g], -1.0, 1.0, seed + 3);
        check_gradients(&[x.clone(), w.clone(), b], |t| conv_transpose2d(&t[0], &t[1], Some(&t[2]), &o))
            .unwrap_or_else(|e| panic!("case {i}: {e}"));
        check_gradients(&[x, w], |t| conv_transpose2d(&t[0], &t[1], None, &o))
            .unwrap_or_else(|e| panic!("case {i}: {e}"));
    }
}

#[test]
fn backward_computes_only_what_is_needed() {
    // A constant input (no gradient) with a trained weight, and the reverse.
    let x = Tensor::from_array(uniform(&[2, 3, 5, 5], -1.0, 1.0, 1));
    let w = Tensor::from_array(uniform(&[4, 3, 3, 3], -1.0, 1.0, 2)).requires_grad_(true);
    let b = Tensor::from_array(uniform(&[4], -1.0, 1.0, 3)).requires_grad_(true);
    let o = Conv2dOptions::default().padding([1, 1]);
    conv2d(&x, &w, Some(&b), &o).unwrap().sum_all().backward().unwrap();
    assert!(x.grad().is_none());
    assert_eq!(w.grad().unwrap().shape(), &[4, 3, 3, 3]);
    // d(sum)/d(bias) = number of output positions per channel.
    assert_eq!(b.grad().unwrap().to_vec_f32().unwrap(), vec![50.0; 4]);
    let x = Tensor::from_array(uniform(&[2, 3, 5, 5], -1.0, 1.0, 1)).requires_grad_(true);
    let w = Tensor::from_array(uniform(&[4, 3, 3, 3], -1.0, 1.0, 2));
    conv2d(&x, &w, None, &o).unwrap().sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().shape(), &[2, 3, 5, 5]);
    assert!(w.grad().is_none());
}
