//! Arbitrary bytes to the safetensors reader: it must return Ok or Err, never panic, abort,
//! overflow or allocate without bound. When the bytes parse, the header the inspector sees
//! must describe the tensors the loader returns.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let loaded = kiln_io::read_safetensors_bytes(data, "fuzz");
    let header = kiln_io::parse_header(data, "fuzz");
    match (loaded, header) {
        (Ok(l), Ok(h)) => {
            assert_eq!(l.tensors.len(), h.tensors.len());
            assert_eq!(l.metadata, h.metadata);
            for t in &h.tensors {
                let a = &l.tensors[&t.name];
                assert_eq!(a.shape(), t.shape.as_slice());
                // Shape-level ops on whatever shapes a file can declare must not panic.
                let _ = a.reshape(&[-1]);
                let _ = a.flatten(0, -1);
                if a.rank() >= 2 {
                    let _ = a.transpose(0, -1).map(|v| v.contiguous());
                }
            }
        }
        (Err(_), Err(_)) => {}
        // A header that checks out but data that does not convert (U64 beyond i64).
        (Err(e), Ok(_)) => assert!(e.to_string().contains("does not fit in i64"), "{e}"),
        (Ok(_), Err(e)) => panic!("loaded although the header is invalid: {e}"),
    }
});
