//! criterion bench of W4a: one forward of a randomly initialised MiniLM-L6-shaped BERT encoder
//! (6 layers, hidden 384, 12 heads, FFN 1536) on batch 8 x sequence 128, eval mode, no grad.
//! Threads: set `RAYON_NUM_THREADS`.
//!
//! `RAYON_NUM_THREADS=2 cargo bench --bench encoder`

use criterion::{criterion_group, criterion_main, Criterion};
use kiln::models::{BertConfig, BertModel};
use kiln::nn::init;
use kiln::prelude::*;

fn encoder(c: &mut Criterion) {
    let config = BertConfig {
        vocab_size: 30522,
        hidden_size: 384,
        num_hidden_layers: 6,
        num_attention_heads: 12,
        intermediate_size: 1536,
        ..BertConfig::default()
    };
    let mut model = BertModel::new(&config, true, &mut init::rng(0)).unwrap();
    model.eval();
    let ids: Vec<i64> = (0..8 * 128).map(|i| (i * 7919 % 30522) as i64).collect();
    let ids = Tensor::from_vec_i64(ids, &[8, 128]).unwrap();
    let mask = Tensor::from_vec_i64(vec![1; 8 * 128], &[8, 128]).unwrap();
    let mut g = c.benchmark_group("minilm_encoder_8x128");
    g.sample_size(10);
    g.bench_function("forward", |b| b.iter(|| no_grad(|| model.forward(&ids, Some(&mask), None).unwrap())));
}

criterion_group!(benches, encoder);
criterion_main!(benches);
