//! f32 arrays borrowed from external bytes (`ExternalF32`): read in place, copied before any
//! write, refused when unaligned or out of bounds.

use kiln_tensor::{Array, ByteOwner, ExternalF32, Storage};
use std::sync::Arc;

/// Bytes holding `vals` little-endian at an offset that is 4-byte aligned in memory, plus one
/// spare byte at the front and back; returns the owner and the aligned offset.
fn owner_with(vals: &[f32]) -> (ByteOwner, usize) {
    let mut bytes = vec![0u8; vals.len() * 4 + 8];
    let pad = (4 - bytes.as_ptr() as usize % 4) % 4;
    let start = if pad == 0 { 4 } else { pad };
    for (i, v) in vals.iter().enumerate() {
        bytes[start + 4 * i..start + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    (Arc::new(bytes), start)
}

#[test]
fn reads_in_place_and_copies_on_write() {
    let (owner, off) = owner_with(&[1.0, -2.0, 3.5, 4.0]);
    let ext = ExternalF32::new(owner.clone(), off, 4).expect("aligned and in bounds");
    let a = Array::from_external_f32(ext, &[2, 2]).unwrap();
    assert!(a.storage().is_external());
    let p = a.as_slice::<f32>().unwrap().as_ptr();
    assert_eq!(p as usize, (*owner).as_ref().as_ptr() as usize + off, "as_slice must not copy");
    assert_eq!(a.f32_cow().unwrap().as_ptr(), p);
    assert_eq!(a.to_vec_f32().unwrap(), vec![1.0, -2.0, 3.5, 4.0]);
    assert_eq!(a.t().unwrap().contiguous().to_vec_f32().unwrap(), vec![1.0, 3.5, -2.0, 4.0]);
    assert_eq!(a.to_dtype(kiln_tensor::DType::I64).unwrap().to_vec::<i64>().unwrap(), vec![1, -2, 3, 4]);

    let mut b = a.clone();
    b.make_mut_f32().unwrap()[3] = 10.0;
    assert!(matches!(b.storage(), Storage::F32(_)));
    assert_eq!(b.to_vec_f32().unwrap(), vec![1.0, -2.0, 3.5, 10.0]);
    assert_eq!(a.to_vec_f32().unwrap(), vec![1.0, -2.0, 3.5, 4.0]);
    // The owner's bytes are untouched, even for the sole holder of a borrowed buffer.
    drop(b);
    let mut a = a;
    assert_eq!(a.storage_refs(), 1);
    a.make_mut_f32().unwrap()[0] = 5.0;
    assert_eq!((*owner).as_ref()[off..off + 4], 1.0f32.to_le_bytes());
    assert_eq!(a.to_vec_f32().unwrap(), vec![5.0, -2.0, 3.5, 4.0]);
}

#[test]
fn compact_copies_a_window_of_a_borrowed_buffer() {
    let (owner, off) = owner_with(&[1.0, 2.0, 3.0, 4.0]);
    let a = Array::from_external_f32(ExternalF32::new(owner, off, 4).unwrap(), &[4]).unwrap();
    let w = a.narrow(0, 1, 2).unwrap().compact();
    assert!(!w.storage().is_external());
    assert_eq!(w.to_vec_f32().unwrap(), vec![2.0, 3.0]);
    assert!(a.compact().shares_storage(&a));
}

#[test]
fn refuses_unaligned_or_out_of_bounds_ranges() {
    let (owner, off) = owner_with(&[1.0, 2.0]);
    assert!(ExternalF32::new(owner.clone(), off + 1, 1).is_none(), "unaligned");
    assert!(ExternalF32::new(owner.clone(), off, 100).is_none(), "past the end");
    assert!(ExternalF32::new(owner.clone(), usize::MAX, 2).is_none(), "overflow");
    assert!(ExternalF32::new(owner.clone(), off + 1, 0).is_some_and(|e| e.as_slice().is_empty()));
    let e = ExternalF32::new(owner, off, 2).unwrap();
    assert!(Array::from_external_f32(e, &[3]).is_err());
}

#[test]
fn the_owner_lives_while_an_array_uses_it() {
    let (owner, off) = owner_with(&[1.0, 2.0]);
    let weak = Arc::downgrade(&owner);
    let a = Array::from_external_f32(ExternalF32::new(owner, off, 2).unwrap(), &[2]).unwrap();
    let v = a.narrow(0, 1, 1).unwrap();
    drop(a);
    assert!(weak.upgrade().is_some());
    assert_eq!(v.to_vec_f32().unwrap(), vec![2.0]);
    drop(v);
    assert!(weak.upgrade().is_none());
}
