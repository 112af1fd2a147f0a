//! Zero-copy loading: aligned F32 tensors borrow the file's mapping, writes copy first
//! (copy-on-write) and never reach the file, unaligned or converted tensors are copied, and
//! the mapping lives exactly as long as the tensors using it.

mod common;
use kiln_autograd::Tensor;
use kiln_io::{load_safetensors, load_safetensors_copied, save_safetensors};
use kiln_optim::{Optimizer, Sgd};
use kiln_tensor::{Array, Storage};
use std::path::PathBuf;
use std::sync::Arc;

fn dir(test: &str) -> PathBuf {
    common::fresh_dir(&format!("mmap-{test}"))
}

fn craft(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A file with `w` = [[1, 2, 3], [4, 5, 6]] and `b` = [-1, 0.5], written by kiln's writer.
fn two_tensor_file(test: &str) -> PathBuf {
    let path = dir(test).join("m.safetensors");
    let w = Array::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let b = Array::from_vec(vec![-1.0f32, 0.5], &[2]).unwrap();
    save_safetensors(&path, [("w", &w), ("b", &b)], None).unwrap();
    path
}

#[test]
fn aligned_f32_tensors_read_the_mapping_in_place() {
    let path = two_tensor_file("inplace");
    let t = load_safetensors(&path).unwrap();
    for name in ["w", "b"] {
        assert!(t[name].storage().is_external(), "{name} was copied");
    }
    assert_eq!(t["w"].shape(), &[2, 3]);
    assert_eq!(t["w"].as_slice::<f32>().unwrap(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(t["b"].to_vec_f32().unwrap(), vec![-1.0, 0.5]);
    // Kernels and views read it like any array.
    assert_eq!(t["w"].sum(None, false).unwrap().item().unwrap(), 21.0);
    assert_eq!(t["w"].t().unwrap().to_vec_f32().unwrap(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert!(!t["w"].t().unwrap().contiguous().storage().is_external());

    let copied = load_safetensors_copied(&path).unwrap();
    assert!(!copied["w"].storage().is_external() && !copied["b"].storage().is_external());
    assert_eq!(copied["w"].to_vec_f32().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
}

#[test]
fn writing_a_mapped_tensor_copies_and_leaves_the_file_and_its_sharers_alone() {
    let path = two_tensor_file("cow");
    let before = std::fs::read(&path).unwrap();
    let t = load_safetensors(&path).unwrap();
    let mut w = t["w"].clone();
    let view = t["w"].narrow(0, 1, 1).unwrap();
    w.make_mut_f32().unwrap()[0] = 100.0;
    assert!(!w.storage().is_external());
    assert_eq!(w.to_vec_f32().unwrap(), vec![100.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(t["w"].to_vec_f32().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(view.to_vec_f32().unwrap(), vec![4.0, 5.0, 6.0]);
    assert!(t["b"].storage().is_external());
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // The sole owner of a mapped tensor must copy too (no other reference forces it).
    let mut t = t;
    let mut b = t.remove("b").unwrap();
    assert_eq!(b.storage_refs(), 1);
    b.make_mut_f32().unwrap()[1] = 7.0;
    assert_eq!(b.to_vec_f32().unwrap(), vec![-1.0, 7.0]);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(load_safetensors(&path).unwrap()["b"].to_vec_f32().unwrap(), vec![-1.0, 0.5]);
}

#[test]
fn an_optimizer_step_on_a_loaded_parameter_copies_it() {
    let path = two_tensor_file("sgd");
    let before = std::fs::read(&path).unwrap();
    let mut t = load_safetensors(&path).unwrap();
    let p = Tensor::from_array(t.remove("w").unwrap()).requires_grad_(true);
    p.set_grad(Some(Array::full(&[2, 3], 2.0))).unwrap();
    let mut opt = Sgd::new(vec![p.clone()], 0.5);
    opt.step().unwrap();
    // w - 0.5 * 2 = w - 1.
    assert_eq!(p.data().to_vec_f32().unwrap(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    assert!(!p.data().storage().is_external());
    assert_eq!(t["b"].to_vec_f32().unwrap(), vec![-1.0, 0.5]);
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn an_unaligned_f32_tensor_is_copied() {
    // A 9-byte header puts the data at file offset 17, and a 1-byte U8 tensor first puts
    // "x" at 18: neither F32 tensor is 4-byte aligned in the mapping.
    let header =
        r#"{"m":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"x":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}}"#;
    let header = format!("{header:<width$}", width = header.len() + (9 - header.len() % 4) % 4);
    assert_eq!((8 + header.len() + 1) % 4, 2, "the crafted offset must be unaligned");
    let mut data = vec![3u8];
    data.extend(f32s(&[1.5, -2.25]));
    let path = dir("unaligned").join("u.safetensors");
    std::fs::write(&path, craft(&header, &data)).unwrap();
    let t = load_safetensors(&path).unwrap();
    assert!(!t["x"].storage().is_external());
    assert_eq!(t["x"].to_vec_f32().unwrap(), vec![1.5, -2.25]);
    assert_eq!(t["m"].to_vec::<u8>().unwrap(), vec![3]);
}

#[test]
fn other_dtypes_are_still_converted_from_a_file() {
    // F16 1.5 = 0x3e00, BF16 -2 = 0xc000, F64 0.1, I64 -5.
    let header = concat!(
        r#"{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},"#,
        r#""b":{"dtype":"BF16","shape":[1],"data_offsets":[2,4]},"#,
        r#""c":{"dtype":"F64","shape":[1],"data_offsets":[4,12]},"#,
        r#""d":{"dtype":"I64","shape":[1],"data_offsets":[12,20]}}"#
    );
    let mut data = Vec::new();
    data.extend(0x3e00u16.to_le_bytes());
    data.extend(0xc000u16.to_le_bytes());
    data.extend(0.1f64.to_le_bytes());
    data.extend((-5i64).to_le_bytes());
    let path = dir("dtypes").join("d.safetensors");
    std::fs::write(&path, craft(header, &data)).unwrap();
    let t = load_safetensors(&path).unwrap();
    assert_eq!(t["a"].to_vec_f32().unwrap(), vec![1.5]);
    assert_eq!(t["b"].to_vec_f32().unwrap(), vec![-2.0]);
    assert_eq!(t["c"].to_vec_f32().unwrap(), vec![0.1f64 as f32]);
    assert_eq!(t["d"].to_vec::<i64>().unwrap(), vec![-5]);
    assert!(t.values().all(|a| !a.storage().is_external()));
}

#[test]
fn the_mapping_lives_while_a_tensor_or_view_uses_it() {
    let path = two_tensor_file("release");
    let mut t = load_safetensors(&path).unwrap();
    let owner = match t["w"].storage() {
        Storage::F32External(e) => Arc::downgrade(e.owner()),
        other => panic!("expected a mapped tensor, got {other:?}"),
    };
    let view = t["w"].narrow(1, 2, 1).unwrap();
    t.remove("w");
    assert!(owner.upgrade().is_some());
    drop(t);
    assert!(owner.upgrade().is_some(), "a view keeps the mapping");
    assert_eq!(view.to_vec_f32().unwrap(), vec![3.0, 6.0]);
    drop(view);
    assert!(owner.upgrade().is_none(), "the mapping outlived every tensor");
}

#[test]
fn saving_over_a_mapped_file_keeps_the_loaded_values() {
    let path = two_tensor_file("overwrite");
    let t = load_safetensors(&path).unwrap();
    // kiln's writer replaces the file by a rename: the mapping keeps the old file.
    let w2 = Array::from_vec(vec![9.0f32; 6], &[2, 3]).unwrap();
    save_safetensors(&path, [("w", &w2)], None).unwrap();
    assert_eq!(t["w"].to_vec_f32().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(load_safetensors(&path).unwrap()["w"].to_vec_f32().unwrap(), vec![9.0; 6]);
}

/// The process's anonymous resident memory in KiB (Linux).
#[cfg(target_os = "linux")]
fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).expect("RssAnon in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn loading_and_reading_a_large_file_does_not_copy_it_into_process_memory() {
    let n = 8 << 20; // 32 MiB of f32
    let path = dir("rss").join("big.safetensors");
    let big = Array::from_vec((0..n).map(|i| (i % 7) as f32).collect::<Vec<f32>>(), &[n]).unwrap();
    save_safetensors(&path, [("big", &big)], None).unwrap();
    drop(big);
    let before = rss_anon_kib();
    let t = load_safetensors(&path).unwrap();
    // Reading every element maps the file's pages (file-backed, not anonymous memory).
    let expect: f32 = (0..n).map(|i| (i % 7) as f32).sum();
    assert_eq!(t["big"].as_slice::<f32>().unwrap().iter().sum::<f32>(), expect);
    let grew = rss_anon_kib().saturating_sub(before);
    // A copy would add 32768 KiB; other tests running meanwhile allocate far less than 8 MiB.
    assert!(grew < 8 << 10, "anonymous memory grew by {grew} KiB while reading a mapped 32 MiB tensor");
}
