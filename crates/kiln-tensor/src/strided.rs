//! Walking strided layouts: gathering a view into a contiguous buffer and the general
//! (broadcasting) elementwise loops.

use crate::layout::Layout;

/// Copies the elements of `layout` over `src` into a new row-major buffer.
pub fn gather<T: Copy>(src: &[T], layout: &Layout) -> Vec<T> {
    if let Some(r) = layout.contiguous_range() {
        return src[r].to_vec();
    }
    let n = layout.numel();
    let mut out = Vec::with_capacity(n);
    let rank = layout.rank();
    let (len, stride) = (layout.shape()[rank - 1], layout.strides()[rank - 1]);
    layout.for_each_row(|off| {
        if stride == 1 {
            out.extend_from_slice(&src[off..off + len]);
        } else if stride == 0 {
            // A broadcast row (e.g. the gradient of a sum or mean): one value repeated.
            out.resize(out.len() + len, src[off]);
        } else {
            out.extend((0..len).map(|i| src[off + i * stride]));
        }
    });
    out
}

/// Calls `f(offsets)` for each output row of `shape`'s last dim with the buffer offset of the row
/// start in each of `layouts` (already broadcast to `shape`).
pub fn for_each_row_n<const N: usize>(shape: &[usize], layouts: [&Layout; N], mut f: impl FnMut([usize; N])) {
    let r = shape.len();
    if shape.contains(&0) {
        return;
    }
    if r <= 1 {
        f(layouts.map(|l| l.offset()));
        return;
    }
    let outer = &shape[..r - 1];
    let mut idx = vec![0usize; outer.len()];
    let mut offs = layouts.map(|l| l.offset());
    loop {
        f(offs);
        let mut d = outer.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            for k in 0..N {
                offs[k] += layouts[k].strides()[d];
            }
            if idx[d] < outer[d] {
                break;
            }
            for k in 0..N {
                offs[k] -= layouts[k].strides()[d] * outer[d];
            }
            idx[d] = 0;
        }
    }
}
