//! safetensors reading and writing: round trips, files from the reference writer, dtype
//! conversions against hand-computed values, atomic writes, and one test per kind of
//! malformed file (crafted byte by byte).

mod common;
use common::FailAfter;
use kiln_io::{
    load_safetensors, load_safetensors_bytes, read_header, read_safetensors, save_safetensors, temp_path,
    write_atomically, write_safetensors, Dtype,
};
use kiln_tensor::{Array, DType, Error};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

fn dir(test: &str) -> PathBuf {
    common::fresh_dir(&format!("st-{test}"))
}

/// A file from a header string and data bytes.
fn craft(header: &str, data: &[u8]) -> Vec<u8> {
    craft_raw(header.as_bytes(), data)
}

fn craft_raw(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

/// The error of loading `bytes` (named "bad.st"), checked to be a format error naming it.
fn load_err(bytes: &[u8]) -> String {
    let e = load_safetensors_bytes(bytes, "bad.st").expect_err("malformed input must fail");
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.starts_with("bad.st: "), "{msg}");
    msg
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

// ------------------------------------------------------------------ round trips

#[test]
fn round_trip_keeps_names_dtypes_shapes_values_and_metadata() {
    let d = dir("roundtrip");
    let path = d.join("a.safetensors");
    let w = Array::from_vec(vec![1.5f32, -2.0, 3.25, f32::MIN_POSITIVE, f32::MAX, -0.0], &[2, 3]).unwrap();
    let wt = w.transpose(0, 1).unwrap(); // a non-contiguous view: written row-major
    let ids = Array::from_vec(vec![i64::MIN, -1, 0, i64::MAX], &[4]).unwrap();
    let mask = Array::from_vec(vec![0u8, 1, 255], &[3, 1]).unwrap();
    let scalar = Array::scalar(7.0);
    let empty = Array::from_vec(Vec::<f32>::new(), &[0, 5]).unwrap();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string()), ("note".to_string(), "é ✓".to_string())]);
    save_safetensors(
        &path,
        [("w", &w), ("w_t", &wt), ("ids", &ids), ("mask", &mask), ("s", &scalar), ("empty", &empty)],
        Some(meta.clone()),
    )
    .unwrap();
    assert!(!temp_path(&path).exists());

    let back = read_safetensors(&path).unwrap();
    assert_eq!(back.metadata, meta);
    let t = &back.tensors;
    assert_eq!(t.len(), 6);
    assert_eq!(t["w"].shape(), &[2, 3]);
    let bits = |a: &Array| a.to_vec_f32().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&t["w"]), bits(&w));
    assert_eq!(t["w_t"].shape(), &[3, 2]);
    assert_eq!(t["w_t"].to_vec_f32().unwrap(), vec![1.5, f32::MIN_POSITIVE, -2.0, f32::MAX, 3.25, -0.0]);
    assert_eq!(t["ids"].dtype(), DType::I64);
    assert_eq!(t["ids"].to_vec::<i64>().unwrap(), vec![i64::MIN, -1, 0, i64::MAX]);
    assert_eq!(t["mask"].dtype(), DType::U8);
    assert_eq!(t["mask"].shape(), &[3, 1]);
    assert_eq!(t["mask"].to_vec::<u8>().unwrap(), vec![0, 1, 255]);
    assert_eq!(t["s"].shape(), &[] as &[usize]);
    assert_eq!(t["s"].item().unwrap(), 7.0);
    assert_eq!(t["empty"].shape(), &[0, 5]);

    // The reference reader agrees, and the data starts 8-byte aligned.
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor("w_t").unwrap();
    assert_eq!((v.dtype(), v.shape()), (Dtype::F32, &[3usize, 2][..]));
    assert_eq!(v.data(), f32s(&[1.5, f32::MIN_POSITIVE, -2.0, f32::MAX, 3.25, -0.0]).as_slice());
    assert_eq!(st.tensor("ids").unwrap().dtype(), Dtype::I64);
    assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()) % 8, 0);

    let h = read_header(&path).unwrap();
    assert_eq!(h.tensors.iter().map(|t| t.numel()).sum::<usize>(), 6 + 6 + 4 + 3 + 1);
}

#[test]
fn write_rejects_duplicate_and_reserved_names_before_touching_the_file() {
    let d = dir("names");
    let path = d.join("x.safetensors");
    let a = Array::scalar(1.0);
    let e = save_safetensors(&path, [("a", &a), ("a", &a)], None).unwrap_err().to_string();
    assert!(e.contains("\"a\" given twice"), "{e}");
    let e = save_safetensors(&path, [("__metadata__", &a)], None).unwrap_err().to_string();
    assert!(e.contains("reserved"), "{e}");
    assert!(!path.exists() && !temp_path(&path).exists());
}

#[test]
fn reads_every_dtype_of_the_reference_writer_with_exact_conversions() {
    let le16 = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    // Hand-picked bit patterns and their values.
    let f16 = le16(&[0x3c00, 0xc000, 0x0001, 0x7bff, 0x3555]); // 1, -2, 2^-24, 65504, 0.333251953125
    let bf16 = le16(&[0x3f80, 0xc040, 0x4049, 0x0000]); // 1, -3, 3.140625, 0
    let f64s: Vec<u8> = [0.1f64, -1e300, 2.5].iter().flat_map(|x| x.to_le_bytes()).collect();
    let i32s: Vec<u8> = [i32::MIN, -5, 7].iter().flat_map(|x| x.to_le_bytes()).collect();
    let i16s: Vec<u8> = [-300i16, 300].iter().flat_map(|x| x.to_le_bytes()).collect();
    let i8s = vec![0x80u8, 0x7f]; // -128, 127
    let u16s = le16(&[65535, 1]);
    let u32s: Vec<u8> = [4_000_000_000u32, 3].iter().flat_map(|x| x.to_le_bytes()).collect();
    let u64s: Vec<u8> = [i64::MAX as u64, 9].iter().flat_map(|x| x.to_le_bytes()).collect();
    let bools = vec![1u8, 0, 1];
    let e5m2 = vec![0x3cu8, 0xc0]; // 1.0, -2.0
    let e4m3 = vec![0x38u8, 0x7e, 0x01]; // 1.0, 448, 2^-9
    let views = vec![
        ("f16", TensorView::new(Dtype::F16, vec![5], &f16).unwrap()),
        ("bf16", TensorView::new(Dtype::BF16, vec![2, 2], &bf16).unwrap()),
        ("f64", TensorView::new(Dtype::F64, vec![3], &f64s).unwrap()),
        ("i32", TensorView::new(Dtype::I32, vec![3], &i32s).unwrap()),
        ("i16", TensorView::new(Dtype::I16, vec![2], &i16s).unwrap()),
        ("i8", TensorView::new(Dtype::I8, vec![2], &i8s).unwrap()),
        ("u16", TensorView::new(Dtype::U16, vec![2], &u16s).unwrap()),
        ("u32", TensorView::new(Dtype::U32, vec![2], &u32s).unwrap()),
        ("u64", TensorView::new(Dtype::U64, vec![2], &u64s).unwrap()),
        ("bool", TensorView::new(Dtype::BOOL, vec![3], &bools).unwrap()),
        ("e5m2", TensorView::new(Dtype::F8_E5M2, vec![2], &e5m2).unwrap()),
        ("e4m3", TensorView::new(Dtype::F8_E4M3, vec![3], &e4m3).unwrap()),
    ];
    let meta = Some(HashMap::from([("k".to_string(), "v".to_string())]));
    let bytes = safetensors::serialize(views, &meta).unwrap();
    let d = dir("dtypes");
    let path = d.join("ref.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let loaded = read_safetensors(&path).unwrap();
    assert_eq!(loaded.metadata["k"], "v");
    let t = &loaded.tensors;
    let f = |k: &str| t[k].to_vec_f32().unwrap();
    let i = |k: &str| t[k].to_vec::<i64>().unwrap();
    assert_eq!(f("f16"), vec![1.0, -2.0, 2f32.powi(-24), 65504.0, 0.333_251_95]);
    assert_eq!(t["bf16"].shape(), &[2, 2]);
    assert_eq!(f("bf16"), vec![1.0, -3.0, 3.140625, 0.0]);
    assert_eq!(f("f64"), vec![0.1f32, f32::NEG_INFINITY, 2.5]);
    assert_eq!(i("i32"), vec![i32::MIN as i64, -5, 7]);
    assert_eq!(i("i16"), vec![-300, 300]);
    assert_eq!(i("i8"), vec![-128, 127]);
    assert_eq!(i("u16"), vec![65535, 1]);
    assert_eq!(i("u32"), vec![4_000_000_000, 3]);
    assert_eq!(i("u64"), vec![i64::MAX, 9]);
    assert_eq!(t["bool"].dtype(), DType::U8);
    assert_eq!(t["bool"].to_vec::<u8>().unwrap(), vec![1, 0, 1]);
    assert_eq!(f("e5m2"), vec![1.0, -2.0]);
    assert_eq!(f("e4m3"), vec![1.0, 448.0, 2f32.powi(-9)]);
}

#[test]
fn u64_values_beyond_i64_are_an_error() {
    let data: Vec<u8> = [1u64, u64::MAX].iter().flat_map(|x| x.to_le_bytes()).collect();
    let bytes = craft(r#"{"big":{"dtype":"U64","shape":[2],"data_offsets":[0,16]}}"#, &data);
    let e = load_err(&bytes);
    assert!(e.contains("\"big\"") && e.contains("does not fit in i64") && e.contains("element 1"), "{e}");
}

// ------------------------------------------------------------------ atomic writes

#[test]
fn a_save_failing_part_way_leaves_the_previous_file_intact() {
    let d = dir("atomic");
    let path = d.join("w.safetensors");
    let old = Array::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
    save_safetensors(&path, [("w", &old)], None).unwrap();
    let before = std::fs::read(&path).unwrap();

    let new = Array::from_vec((0..100_000).map(|i| i as f32).collect::<Vec<f32>>(), &[100_000]).unwrap();
    for cut in [0, 5, 100, 200_000] {
        let e = write_atomically(&path, |w| {
            let mut fw = FailAfter { inner: w, left: cut };
            write_safetensors(&mut fw, "w.safetensors", [("w", &new)], None)
        })
        .unwrap_err();
        assert!(e.to_string().contains("injected failure"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "cut at {cut}");
        assert!(!temp_path(&path).exists(), "the temporary file is removed");
        assert_eq!(load_safetensors(&path).unwrap()["w"].to_vec_f32().unwrap(), vec![1.0, 2.0, 3.0]);
    }

    // A crash leaves a truncated temporary file: the target still loads, and the next save
    // replaces both.
    std::fs::write(temp_path(&path), &before[..before.len() / 2]).unwrap();
    assert_eq!(load_safetensors(&path).unwrap()["w"].to_vec_f32().unwrap(), vec![1.0, 2.0, 3.0]);
    save_safetensors(&path, [("w", &new)], None).unwrap();
    assert!(!temp_path(&path).exists());
    assert_eq!(load_safetensors(&path).unwrap()["w"].numel(), 100_000);
}

#[test]
fn io_errors_name_the_file() {
    let d = dir("io");
    let missing = d.join("nope.safetensors");
    let e = load_safetensors(&missing).unwrap_err();
    assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("nope.safetensors"), "{e}");
    // Saving into a directory that does not exist.
    let e = save_safetensors(d.join("no/such/dir.st"), [("a", &Array::scalar(1.0))], None).unwrap_err();
    assert!(e.to_string().contains("dir.st.tmp"), "{e}");
}

// ------------------------------------------------------------------ malformed files

fn valid() -> Vec<u8> {
    craft(
        r#"{"__metadata__":{"a":"b"},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"I64","shape":[1],"data_offsets":[8,16]}}"#,
        &[f32s(&[1.0, 2.0]), 5i64.to_le_bytes().to_vec()].concat(),
    )
}

#[test]
fn the_crafted_valid_file_loads() {
    let t = load_safetensors_bytes(&valid(), "ok").unwrap();
    assert_eq!(t["x"].to_vec_f32().unwrap(), vec![1.0, 2.0]);
    assert_eq!(t["y"].to_vec::<i64>().unwrap(), vec![5]);
}

#[test]
fn truncated_files_fail_at_every_length() {
    let v = valid();
    for n in 0..v.len() {
        let e = load_err(&v[..n]);
        let why = if n < 8 {
            "too short for the 8-byte header length"
        } else if n < v.len() - 16 {
            "is larger than the"
        } else {
            "run past the end of the data"
        };
        assert!(e.contains(why), "cut at {n}: {e}");
    }
}

#[test]
fn a_truncated_file_on_disk_names_the_file() {
    let d = dir("trunc");
    let path = d.join("cut.safetensors");
    let v = valid();
    std::fs::write(&path, &v[..v.len() - 3]).unwrap();
    let e = load_safetensors(&path).unwrap_err().to_string();
    assert!(e.contains("cut.safetensors") && e.contains("run past the end of the data"), "{e}");
    std::fs::write(&path, &v[..5]).unwrap();
    let e = read_header(&path).unwrap_err().to_string();
    assert!(e.contains("cut.safetensors") && e.contains("5 bytes"), "{e}");
    std::fs::write(&path, b"").unwrap();
    assert!(load_safetensors(&path).unwrap_err().to_string().contains("0 bytes"));
}

#[test]
fn header_length_larger_than_the_file_is_refused_before_allocating() {
    for n in [u64::MAX, 1 << 40, 200_000_000, 17] {
        let mut b = n.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}      ");
        let e = load_err(&b);
        assert!(e.contains(&format!("header length {n} is larger than the 8 bytes")), "{e}");
    }
}

#[test]
fn offsets_out_of_range() {
    let e = load_err(&craft(r#"{"x":{"dtype":"F32","shape":[25],"data_offsets":[0,100]}}"#, &[0; 8]));
    assert!(e.contains("\"x\"") && e.contains("[0, 100] run past the end of the data (8 bytes)"), "{e}");
    let e = load_err(&craft(r#"{"x":{"dtype":"F32","shape":[0],"data_offsets":[9,9]}}"#, &[0; 8]));
    assert!(e.contains("run past the end"), "{e}");
    let e = load_err(&craft(r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#, &[0; 8]));
    assert!(e.contains("end before they begin"), "{e}");
    let e = load_err(&craft(r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#, &[0; 8]));
    assert!(e.contains("[begin, end], got 3 numbers"), "{e}");
    let e = load_err(&craft(r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#, &[0; 4]));
    assert!(e.contains("non-negative"), "{e}");
}

#[test]
fn overlapping_offsets() {
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let e = load_err(&craft(h, &[0; 12]));
    assert!(e.contains("\"a\" (bytes 0..8) and \"b\" (bytes 4..12) overlap"), "{e}");
    // The same range twice.
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    assert!(load_err(&craft(h, &[0; 8])).contains("overlap"));
}

#[test]
fn holes_and_trailing_bytes() {
    let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    let e = load_err(&craft(h, &[0; 12]));
    assert!(e.contains("bytes 4..8 of the data belong to no tensor"), "{e}");
    let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let e = load_err(&craft(h, &[0; 6]));
    assert!(e.contains("the data is 6 bytes but the tensors cover 4"), "{e}");
}

#[test]
fn unknown_dtype() {
    let e = load_err(&craft(r#"{"x":{"dtype":"F7","shape":[1],"data_offsets":[0,1]}}"#, &[0]));
    assert!(e.contains("\"x\": unknown dtype \"F7\""), "{e}");
    let e = load_err(&craft(r#"{"x":{"dtype":3,"shape":[1],"data_offsets":[0,1]}}"#, &[0]));
    assert!(e.contains("dtype must be a string"), "{e}");
    let e = load_err(&craft(r#"{"x":{"shape":[1],"data_offsets":[0,1]}}"#, &[0]));
    assert!(e.contains("missing dtype"), "{e}");
}

#[test]
fn shape_not_matching_the_byte_count() {
    let e = load_err(&craft(r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, &[0; 8]));
    assert!(e.contains("shape [3] of F32 needs 12 bytes but data_offsets [0, 8] hold 8"), "{e}");
    // A shape whose byte size overflows.
    let big = 1u64 << 32;
    let h = format!(r#"{{"x":{{"dtype":"F64","shape":[{big},{big},{big}],"data_offsets":[0,8]}}}}"#);
    let e = load_err(&craft(&h, &[0; 8]));
    assert!(e.contains("more bytes than fit in memory"), "{e}");
    let e = load_err(&craft(r#"{"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#, &[0; 4]));
    assert!(e.contains("shape must hold non-negative integers"), "{e}");
    let e = load_err(&craft(r#"{"x":{"dtype":"F32","shape":"2","data_offsets":[0,4]}}"#, &[0; 4]));
    assert!(e.contains("shape must be an array"), "{e}");
}

#[test]
fn non_utf8_header() {
    let e = load_err(&craft_raw(b"{\"x\xff\":{}}", &[]));
    assert!(e.contains("header is not valid UTF-8 (byte 3 of the header)"), "{e}");
}

#[test]
fn non_json_header() {
    let e = load_err(&craft("not json", &[]));
    assert!(e.contains("header is not a valid JSON object"), "{e}");
    for h in ["[1, 2]", "\"x\"", "{\"a\": ", "{} {}", ""] {
        assert!(load_err(&craft(h, &[])).contains("not a valid JSON object"), "{h}");
    }
    let e = load_err(&craft(r#"{"x": 5}"#, &[]));
    assert!(e.contains("\"x\": entry must be an object, got a number"), "{e}");
}

#[test]
fn duplicate_names_and_bad_metadata() {
    let h =
        r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
    assert!(load_err(&craft(h, &[0, 0])).contains("name \"a\" appears twice"));
    let e = load_err(&craft(r#"{"__metadata__":{"n":1}}"#, &[]));
    assert!(e.contains("__metadata__ entry \"n\" must be a string, got a number"), "{e}");
    let e = load_err(&craft(r#"{"__metadata__":[]}"#, &[]));
    assert!(e.contains("__metadata__ must be an object"), "{e}");
}

#[test]
fn an_empty_file_of_tensors_is_valid() {
    let t = load_safetensors_bytes(&craft("{}", &[]), "empty").unwrap();
    assert!(t.is_empty());
    // Spaces pad headers.
    assert!(load_safetensors_bytes(&craft("{}      ", &[]), "padded").unwrap().is_empty());
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let h = format!(r#"{{"x":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    assert!(load_err(&craft(&h, &[])).contains("not a valid JSON object"));
}

// ------------------------------------------------------------------ fuzzing corpus

/// The files under `fuzz/<dir>/safetensors/`, if any.
fn fuzz_files(dir: &str) -> Vec<PathBuf> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz").join(dir).join("safetensors");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&d).map(|r| r.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    v.sort();
    v
}

#[test]
fn the_fuzzing_seeds_load() {
    let seeds = fuzz_files("seeds");
    assert!(seeds.len() >= 4, "{seeds:?}");
    for p in seeds {
        load_safetensors(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}

/// Inputs the fuzzer found (docs/fuzzing.md): each must be refused cleanly, naming the file.
#[test]
fn the_fuzzing_regressions_fail_cleanly() {
    for p in fuzz_files("regressions") {
        let e = load_safetensors(&p).expect_err(&p.display().to_string());
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(e.to_string().contains(&name), "{e}");
    }
}

/// An empty tensor whose other dims multiply past `usize`: zero bytes, so the byte count
/// matches, but the array's row-major strides (products of trailing dims) would overflow.
/// Found by review while fuzzing (the fuzzer had not reached it after 6 minutes).
#[test]
fn an_empty_shape_whose_strides_overflow_is_refused() {
    let big = 1u64 << 40;
    for shape in [format!("[0,{big},{big}]"), format!("[{big},0,{big},{big}]"), format!("[0,{}]", u64::MAX)] {
        let h = format!(r#"{{"x":{{"dtype":"F32","shape":{shape},"data_offsets":[0,0]}}}}"#);
        let e = load_err(&craft(&h, &[]));
        assert!(e.contains("\"x\"") && e.contains("more bytes than fit in memory"), "{shape}: {e}");
    }
    // Huge dims next to a zero are fine while their product fits.
    let h = format!(r#"{{"x":{{"dtype":"F32","shape":[{big},0],"data_offsets":[0,0]}}}}"#);
    assert_eq!(load_safetensors_bytes(&craft(&h, &[]), "ok").unwrap()["x"].shape(), &[1 << 40, 0]);
}
