//! `kiln inspect` run as a subprocess on good and malformed files.

use kiln_io::save_safetensors;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

fn dir(test: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kiln-cli-{test}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn kiln(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn inspect_lists_tensors_metadata_and_the_parameter_count() {
    let d = dir("good");
    let path = d.join("model.safetensors");
    let w = kiln_tensor::Array::zeros(&[4, 3]);
    let b = kiln_tensor::Array::zeros(&[4]);
    let step = kiln_tensor::Array::from_vec(vec![5i64], &[]).unwrap();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    save_safetensors(&path, [("fc.weight", &w), ("fc.bias", &b), ("steps", &step)], Some(meta)).unwrap();

    let (code, out, err) = kiln(&["inspect".as_ref(), path.as_os_str()]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].ends_with("model.safetensors: 3 tensors, 72 bytes of data"), "{out}");
    assert_eq!(lines[1..3], ["metadata:", "  format: pt"]);
    assert_eq!(lines[3].split_whitespace().collect::<Vec<_>>(), ["name", "dtype", "shape"]);
    let row = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>().join(" ");
    assert_eq!(row(lines[4]), "fc.bias F32 [4]");
    assert_eq!(row(lines[5]), "fc.weight F32 [4, 3]");
    assert_eq!(row(lines[6]), "steps I64 []");
    // 12 + 4 + 1 elements.
    assert_eq!(lines[7], "total parameters: 17");
}

#[test]
fn malformed_files_exit_1_with_the_file_and_problem_on_stderr() {
    let d = dir("bad");
    let path = d.join("broken.safetensors");
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(&path, &bytes).unwrap();
    let (code, out, err) = kiln(&["inspect".as_ref(), path.as_os_str()]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("broken.safetensors") && err.contains("header length 1000 is larger than the 2 bytes"),
        "{err}"
    );

    let header = br#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0; 8]);
    std::fs::write(&path, &bytes).unwrap();
    let (code, _, err) = kiln(&["inspect".as_ref(), path.as_os_str()]);
    assert_eq!(code, 1);
    assert!(err.contains("broken.safetensors") && err.contains("needs 12 bytes"), "{err}");

    let missing = d.join("missing.safetensors");
    let (code, _, err) = kiln(&["inspect".as_ref(), missing.as_os_str()]);
    assert_eq!(code, 1);
    assert!(err.contains("missing.safetensors"), "{err}");

    // Usage errors are clap's (exit 2).
    let (code, _, err) = kiln(&["inspect".as_ref()]);
    assert_eq!(code, 2, "{err}");
}
