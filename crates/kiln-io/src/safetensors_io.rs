//! safetensors files to and from named [`Array`]s.

use kiln_tensor::{Array, Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

/// Reads every tensor of a safetensors file. F32, I64 and U8 keep their type (BOOL becomes
/// U8); F16, BF16 and F64 are converted to f32; other integer types to i64.
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<BTreeMap<String, Array>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
    load_safetensors_bytes(&bytes, &path.display().to_string())
}

/// Parses a safetensors file held in memory; `what` names it in errors.
pub fn load_safetensors_bytes(bytes: &[u8], what: &str) -> Result<BTreeMap<String, Array>> {
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| Error::Format { what: what.to_string(), msg: e.to_string() })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let bad = |msg: &str| Error::Format { what: what.to_string(), msg: format!("tensor {name}: {msg}") };
        let arr = match view.dtype() {
            Dtype::F32 => Array::from_vec(le_chunks::<4, _>(data, f32::from_le_bytes), &shape),
            Dtype::F64 => Array::from_vec(le_chunks::<8, _>(data, |b| f64::from_le_bytes(b) as f32), &shape),
            Dtype::I64 => Array::from_vec(le_chunks::<8, _>(data, i64::from_le_bytes), &shape),
            Dtype::I32 => Array::from_vec(le_chunks::<4, _>(data, |b| i32::from_le_bytes(b) as i64), &shape),
            Dtype::U8 | Dtype::BOOL => Array::from_vec(data.to_vec(), &shape),
            Dtype::F16 => Array::from_vec(le_chunks::<2, _>(data, |b| f16_to_f32(u16::from_le_bytes(b))), &shape),
            Dtype::BF16 => Array::from_vec(
                le_chunks::<2, _>(data, |b| f32::from_bits((u16::from_le_bytes(b) as u32) << 16)),
                &shape,
            ),
            other => return Err(bad(&format!("unsupported dtype {other:?}"))),
        }
        .map_err(|e| bad(&e.to_string()))?;
        out.insert(name, arr);
    }
    Ok(out)
}

fn le_chunks<const N: usize, T>(data: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N).map(|c| f(c.try_into().expect("chunk of N bytes"))).collect()
}

/// IEEE half to f32 (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalize.
            let shift = m.leading_zeros() - 21;
            let m = (m << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (m << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    #[test]
    fn half_conversion_is_exact_on_known_values() {
        assert_eq!(super::f16_to_f32(0x3c00), 1.0);
        assert_eq!(super::f16_to_f32(0xc000), -2.0);
        assert_eq!(super::f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(super::f16_to_f32(0x7bff), 65504.0);
        assert!(super::f16_to_f32(0x7c00).is_infinite());
    }
}
