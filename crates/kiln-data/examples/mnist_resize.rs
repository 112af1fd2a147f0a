//! Times loading MNIST and resizing all 60000 training images from 28x28 to 112x112 (the
//! EfficientNet transfer example's preprocessing), in batches of 1000.
//!
//! `cargo run --release -p kiln-data --example mnist_resize -- /path/to/assets/mnist`

use kiln_data::{load_mnist, MnistSplit, Resize};
use std::time::Instant;

fn main() -> kiln_tensor::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "../shared/assets/mnist".into());
    let count: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(60000);
    let t = Instant::now();
    let train = load_mnist(&dir, MnistSplit::Train, true)?;
    println!("loaded {:?} in {:.3} s", train.features().shape(), t.elapsed().as_secs_f64());
    let t = Instant::now();
    let bytes = std::fs::read(format!("{dir}/train-images-idx3-ubyte.gz"))
        .map_err(|e| kiln_tensor::Error::Msg(e.to_string()))?;
    let raw = {
        use std::io::Read;
        let mut v = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut v)
            .map_err(|e| kiln_tensor::Error::Msg(e.to_string()))?;
        v
    };
    let t_gz = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let x = kiln_data::parse_idx_images(&raw, "raw", true)?;
    println!("gunzip {t_gz:.3} s; parse + convert of the raw {} bytes {:.3} s", raw.len(), t.elapsed().as_secs_f64());
    let resize = Resize::new((28, 28), (112, 112))?;
    let t = Instant::now();
    let mut checksum = 0.0f64;
    for start in (0..count).step_by(1000) {
        let y = resize.apply(&x.narrow(0, start, 1000.min(count - start))?)?;
        checksum += y.as_slice::<f32>().map(|s| s[12345] as f64).unwrap_or(0.0);
    }
    println!("resized {count} images 28->112 in {:.3} s (checksum {checksum:.3})", t.elapsed().as_secs_f64());
    Ok(())
}
