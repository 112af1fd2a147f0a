//! Generation: the key/value cache against full forwards, greedy and sampled decoding.

use kiln_autograd::gradcheck::uniform;
use kiln_autograd::{Array, Tensor};
use kiln_models::{Gpt, GptActivation, GptConfig, Sampling};
use kiln_nn::{Forward, Module};
use std::collections::BTreeMap;

fn model(n_positions: usize, tied: bool, seed: u64) -> Gpt {
    let cfg = GptConfig {
        vocab_size: 13,
        n_positions,
        n_embd: 16,
        n_layer: 2,
        n_head: 4,
        activation_function: GptActivation::GeluNew,
        resid_pdrop: 0.0,
        embd_pdrop: 0.0,
        attn_pdrop: 0.0,
        tie_word_embeddings: tied,
        ..GptConfig::default()
    };
    let mut m = Gpt::new(cfg, seed).unwrap();
    // Large random weights so that the logits are far from uniform and depend on the context.
    let state: BTreeMap<String, Array> = m
        .named_parameters()
        .into_iter()
        .enumerate()
        .map(|(i, (n, t))| (n, uniform(t.shape(), -0.8, 0.8, seed * 1000 + i as u64)))
        .collect();
    m.load_state_dict(&state, true).unwrap();
    m.eval();
    m
}

/// Logits `[B, V]` of the last position of a full forward over `seqs`.
fn last_logits(m: &Gpt, seqs: &[Vec<i64>]) -> Vec<Vec<f32>> {
    let t = seqs[0].len();
    let ids = Tensor::from_vec_i64(seqs.concat(), &[seqs.len(), t]).unwrap();
    let l = m.forward(&ids).unwrap().to_vec_f32().unwrap();
    let v = m.config().vocab_size;
    (0..seqs.len()).map(|b| l[(b * t + t - 1) * v..(b * t + t) * v].to_vec()).collect()
}

fn argmax(x: &[f32]) -> i64 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as i64
}

#[test]
fn cached_logits_match_the_full_forward() {
    let m = model(24, false, 1);
    let seq: Vec<i64> = vec![1, 5, 2, 12, 0, 7, 7, 3, 9, 11, 4, 6, 8, 2, 10];
    let full = m.forward(&Tensor::from_vec_i64(seq.clone(), &[1, seq.len()]).unwrap()).unwrap().to_vec_f32().unwrap();
    // Prefill 4, then chunks of 1, 3, 1, 2 and single steps: every split path of the cache.
    // A capacity of 2 forces the buffers to grow.
    let mut cache = m.new_cache(1, 2);
    let mut at = 0;
    for len in [4, 1, 3, 1, 2, 1, 1, 1, 1] {
        let chunk = Tensor::from_vec_i64(seq[at..at + len].to_vec(), &[1, len]).unwrap();
        let got = m.forward_cached(&chunk, &mut cache).unwrap();
        assert_eq!(got.shape(), &[1, len, 13]);
        assert!(!got.requires_grad());
        let want = &full[at * 13..(at + len) * 13];
        for (i, (a, b)) in got.to_vec_f32().unwrap().iter().zip(want).enumerate() {
            assert!((a - b).abs() <= 1e-5, "positions {at}+: logit {i}: cached {a} vs full {b}");
        }
        at += len;
        assert_eq!(cache.len(), at);
    }
    // Past n_positions is an error, not a silent wrap.
    let long = Tensor::from_vec_i64(vec![0; 10], &[1, 10]).unwrap();
    assert!(m.forward_cached(&long, &mut cache).unwrap_err().to_string().contains("n_positions"));
}

#[test]
fn greedy_generation_with_the_cache_equals_recomputing_each_step() {
    let m = model(32, true, 8);
    let prompts = vec![vec![3i64, 1, 4], vec![1, 5, 9]];
    let out = m.generate(&Tensor::from_vec_i64(prompts.concat(), &[2, 3]).unwrap(), 20, Sampling::greedy()).unwrap();
    assert_eq!(out.shape(), &[2, 23]);
    let got = out.data().to_vec::<i64>().unwrap();
    // Reference: a full forward over the whole sequence at every step.
    let mut seqs = prompts.clone();
    for _ in 0..20 {
        let logits = last_logits(&m, &seqs);
        for (s, l) in seqs.iter_mut().zip(&logits) {
            s.push(argmax(l));
        }
    }
    assert_eq!(got, seqs.concat());
    // The generated tokens vary (the test is not vacuous).
    for s in &seqs {
        let new: std::collections::BTreeSet<i64> = s[3..].iter().copied().collect();
        assert!(new.len() > 2, "{s:?}");
    }
    // An unbatched prompt gives an unbatched result, the same tokens.
    let one = m.generate(&Tensor::from_vec_i64(prompts[1].clone(), &[3]).unwrap(), 20, Sampling::greedy()).unwrap();
    assert_eq!(one.shape(), &[23]);
    assert_eq!(one.data().to_vec::<i64>().unwrap(), seqs[1]);
}

#[test]
fn generation_past_n_positions_slides_the_window() {
    let m = model(6, false, 3);
    let prompt = vec![2i64, 7, 1, 8];
    let out = m.generate(&Tensor::from_vec_i64(prompt.clone(), &[1, 4]).unwrap(), 9, Sampling::greedy()).unwrap();
    let mut seq = prompt;
    for _ in 0..9 {
        let window = seq[seq.len().saturating_sub(6)..].to_vec();
        seq.push(argmax(&last_logits(&m, &[window])[0]));
    }
    assert_eq!(out.data().to_vec::<i64>().unwrap(), seq);
    // A prompt longer than the context is cropped to its last n_positions tokens.
    let long: Vec<i64> = (0..9).map(|i| i % 13).collect();
    let out = m.generate(&Tensor::from_vec_i64(long.clone(), &[9]).unwrap(), 1, Sampling::greedy()).unwrap();
    assert_eq!(out.data().to_vec::<i64>().unwrap()[9], argmax(&last_logits(&m, &[long[3..].to_vec()])[0]));
}

#[test]
fn sampling_is_seeded_and_respects_top_k() {
    let m = model(40, true, 4);
    let prompt = Tensor::from_vec_i64(vec![0, 6, 3, 6, 3, 6, 0, 11], &[2, 4]).unwrap();
    let s = Sampling::new(1.5, Some(3), 42);
    let a = m.generate(&prompt, 30, s).unwrap().data().to_vec::<i64>().unwrap();
    let b = m.generate(&prompt, 30, s).unwrap().data().to_vec::<i64>().unwrap();
    assert_eq!(a, b, "same seed, same tokens");
    let c = m.generate(&prompt, 30, Sampling { seed: 43, ..s }).unwrap().data().to_vec::<i64>().unwrap();
    assert_ne!(a, c, "another seed, other tokens");
    // Every sampled token is among the 3 largest logits of a full forward over its prefix.
    for row in a.chunks(34) {
        for t in 4..34 {
            let l = &last_logits(&m, &[row[..t].to_vec()])[0];
            let mut sorted = l.clone();
            sorted.sort_by(|x, y| y.total_cmp(x));
            assert!(l[row[t] as usize] >= sorted[2], "token {} at {t} is not in the top 3", row[t]);
        }
    }
    // Top-1 is greedy; a high temperature without top-k visits more tokens than top-3.
    let top1 = m.generate(&prompt, 12, Sampling::new(2.0, Some(1), 7)).unwrap();
    let greedy = m.generate(&prompt, 12, Sampling::greedy()).unwrap();
    assert_eq!(top1.data().to_vec::<i64>().unwrap(), greedy.data().to_vec::<i64>().unwrap());
    let wide = m.generate(&prompt, 200, Sampling::new(5.0, None, 1)).unwrap().data().to_vec::<i64>();
    let distinct: std::collections::BTreeSet<i64> = wide.unwrap().into_iter().collect();
    assert!(distinct.len() > 6, "{distinct:?}");
}

#[test]
fn sampling_frequencies_follow_the_softmax() {
    // Logits ln(1), ln(2), ln(3), ln(4) at temperature 1: probabilities 0.1, 0.2, 0.3, 0.4.
    let logits: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0].iter().map(|p| p.ln()).collect();
    let s = Sampling::new(1.0, None, 0);
    let mut rng = kiln_nn::init::rng(5);
    let mut counts = [0usize; 4];
    let n = 20_000;
    for _ in 0..n {
        counts[s.pick(&logits, &mut rng)] += 1;
    }
    for (i, &c) in counts.iter().enumerate() {
        let p = (i + 1) as f64 / 10.0;
        let sd = (p * (1.0 - p) / n as f64).sqrt();
        assert!((c as f64 / n as f64 - p).abs() < 5.0 * sd, "token {i}: {c}/{n} vs {p}");
    }
    // Temperature 0.5 squares the odds: 1, 4, 9, 16 over 30; top-2 keeps 9 : 16.
    let s = Sampling::new(0.5, Some(2), 0);
    let mut counts = [0usize; 4];
    for _ in 0..n {
        counts[s.pick(&logits, &mut rng)] += 1;
    }
    assert_eq!(counts[0] + counts[1], 0);
    let p = 16.0 / 25.0;
    let sd = (p * (1.0 - p) / n as f64).sqrt();
    assert!((counts[3] as f64 / n as f64 - p).abs() < 5.0 * sd, "{counts:?}");
    assert_eq!(Sampling::greedy().pick(&[0.0, 3.0, 3.0, 1.0], &mut rng), 1);
}

#[test]
fn generate_rejects_bad_prompts() {
    let m = model(8, true, 5);
    assert!(m.generate(&Tensor::zeros(&[1, 2]), 3, Sampling::greedy()).is_err());
    assert!(m.generate(&Tensor::from_vec_i64(vec![], &[1, 0]).unwrap(), 3, Sampling::greedy()).is_err());
    let p = Tensor::from_vec_i64(vec![1, 2], &[1, 2]).unwrap();
    assert_eq!(m.generate(&p, 0, Sampling::greedy()).unwrap().data().to_vec::<i64>().unwrap(), vec![1, 2]);
}
