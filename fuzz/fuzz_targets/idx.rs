//! Arbitrary bytes into the IDX parser (raw and, through the gzip magic, compressed): it must
//! return an error or a well-formed result, never panic, and never allocate by the header's
//! claimed size (libFuzzer's -rss_limit_mb / -malloc_limit_mb catch that).

#![no_main]

use kiln_data::{parse_idx_images, parse_idx_labels, Idx};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(idx) = Idx::parse(data, "fuzz") {
        // A parsed file holds exactly the elements its sizes declare.
        let numel: usize = idx.dims.iter().product();
        let a = idx.to_f32(255.0);
        assert_eq!(a.numel(), numel);
        assert_eq!(a.shape(), &idx.dims[..]);
        if let Ok(i) = idx.to_i64("fuzz") {
            assert_eq!(i.numel(), numel);
        }
    }
    if let Ok(x) = parse_idx_images(data, "fuzz", true) {
        assert_eq!(x.rank(), 3);
        assert!(x.to_vec_f32().unwrap().iter().all(|v| (0.0..=1.0).contains(v)));
    }
    if let Ok(y) = parse_idx_labels(data, "fuzz") {
        assert_eq!(y.rank(), 1);
    }
});
