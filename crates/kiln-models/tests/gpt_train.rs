//! Training a Gpt: finite-difference gradient checks (Conv1D, the fused attention, a tiny
//! model's loss) and overfitting a short repeated character sequence with AdamW.

use kiln_autograd::gradcheck::{check_gradients, uniform, GradCheck};
use kiln_autograd::{Array, Tensor};
use kiln_models::gpt::{causal_self_attention, conv1d_gpt2};
use kiln_models::{Gpt, GptActivation, GptConfig};
use kiln_nn::Module;
use kiln_optim::{AdamW, Optimizer};
use std::collections::BTreeMap;

#[test]
fn conv1d_gradients() {
    let (x, w, b) = (uniform(&[2, 3, 4], -1.0, 1.0, 1), uniform(&[4, 5], -1.0, 1.0, 2), uniform(&[5], -1.0, 1.0, 3));
    check_gradients(&[x.clone(), w.clone(), b], |t| conv1d_gpt2(&t[0], &t[1], Some(&t[2]))).unwrap();
    check_gradients(&[uniform(&[4], -1.0, 1.0, 4), w.clone()], |t| conv1d_gpt2(&t[0], &t[1], None)).unwrap();
    // A transposed (non-contiguous) input.
    check_gradients(&[uniform(&[4, 3], -1.0, 1.0, 5), w], |t| conv1d_gpt2(&t[0].try_t()?, &t[1], None)).unwrap();
}

#[test]
fn fused_causal_attention_gradients() {
    let qkv = uniform(&[2, 5, 12], -1.5, 1.5, 6);
    check_gradients(std::slice::from_ref(&qkv), |t| causal_self_attention(&t[0], 2, None, None)).unwrap();
    check_gradients(std::slice::from_ref(&qkv), |t| causal_self_attention(&t[0], 1, None, Some(0.7))).unwrap();
    // With a padding mask on the last two keys of the second sequence.
    let mut m = vec![0f32; 10];
    m[8] = f32::MIN;
    m[9] = f32::MIN;
    let mask = Array::from_vec(m, &[2, 1, 1, 5]).unwrap();
    check_gradients(&[qkv], |t| causal_self_attention(&t[0], 2, Some(&mask), None)).unwrap();
    assert!(causal_self_attention(&Tensor::zeros(&[2, 5, 10]), 2, None, None).is_err());
}

#[test]
fn fused_attention_matches_explicit_ops() {
    // softmax(q·kᵀ/√d + causal) @ v per head, with plain ops, on the same packed input.
    let a = uniform(&[2, 4, 18], -1.0, 1.0, 9);
    let qkv = Tensor::from_array(a);
    let got = causal_self_attention(&qkv, 3, None, None).unwrap().to_vec_f32().unwrap();
    let v = qkv.to_vec_f32().unwrap();
    let (t, e, d) = (4, 6, 2);
    for b in 0..2 {
        for h in 0..3 {
            for i in 0..t {
                let at = |j: usize, part: usize, k: usize| v[(b * t + j) * 3 * e + part * e + h * d + k] as f64;
                let s: Vec<f64> = (0..=i)
                    .map(|j| (0..d).map(|k| at(i, 0, k) * at(j, 1, k)).sum::<f64>() / (d as f64).sqrt())
                    .collect();
                let z: f64 = s.iter().map(|x| x.exp()).sum();
                for k in 0..d {
                    let want: f64 = (0..=i).map(|j| s[j].exp() / z * at(j, 2, k)).sum();
                    let g = got[(b * t + i) * e + h * d + k] as f64;
                    assert!((g - want).abs() < 1e-5, "b{b} h{h} i{i} k{k}: {g} vs {want}");
                }
            }
        }
    }
}

fn tiny(act: GptActivation, tied: bool) -> GptConfig {
    GptConfig {
        vocab_size: 7,
        n_positions: 6,
        n_embd: 8,
        n_layer: 1,
        n_head: 2,
        n_inner: Some(12),
        activation_function: act,
        resid_pdrop: 0.0,
        embd_pdrop: 0.0,
        attn_pdrop: 0.0,
        tie_word_embeddings: tied,
        ..GptConfig::default()
    }
}

/// Checks the loss gradient of a tiny 1-layer Gpt with respect to the parameters `names`
/// (the others fixed at random values).
fn check_model_gradients(cfg: GptConfig, names: &[&str]) {
    let base = Gpt::new(cfg.clone(), 0).unwrap();
    let fixed: BTreeMap<String, Tensor> = base
        .named_parameters()
        .into_iter()
        .enumerate()
        .map(|(i, (n, t))| (n, Tensor::from_array(uniform(t.shape(), -0.7, 0.7, 50 + i as u64))))
        .collect();
    let inputs: Vec<Array> = names.iter().map(|n| fixed[*n].data()).collect();
    let ids = Tensor::from_vec_i64(vec![1, 4, 0, 6, 2, 5, 3, 3, 1, 0], &[2, 5]).unwrap();
    let targets = Tensor::from_vec_i64(vec![4, 0, 6, 2, 5, 3, 1, 2, 0, 6], &[2, 5]).unwrap();
    GradCheck { eps: 1e-2, atol: 2e-3, rtol: 2e-2 }
        .check(&inputs, |t| {
            let mut params = fixed.clone();
            for (n, p) in names.iter().zip(t) {
                params.insert(n.to_string(), p.clone());
            }
            Gpt::from_tensors(cfg.clone(), &params)?.loss(&ids, &targets)
        })
        .unwrap_or_else(|e| panic!("{names:?}: {e}"));
}

#[test]
fn tiny_gpt_loss_gradients_untied_erf_gelu() {
    check_model_gradients(
        tiny(GptActivation::Gelu, false),
        &["h.0.attn.c_attn.weight", "h.0.attn.c_attn.bias", "h.0.ln_1.weight", "wpe.weight", "lm_head.weight"],
    );
    check_model_gradients(
        tiny(GptActivation::Gelu, false),
        &["h.0.attn.c_proj.weight", "h.0.mlp.c_fc.bias", "h.0.mlp.c_proj.weight", "ln_f.bias", "wte.weight"],
    );
}

#[test]
fn tiny_gpt_loss_gradients_tied_tanh_gelu() {
    // The tied wte gets a gradient from both the embedding and the LM head.
    check_model_gradients(tiny(GptActivation::GeluNew, true), &["wte.weight", "h.0.ln_2.bias", "h.0.mlp.c_fc.weight"]);
}

#[test]
fn overfits_a_repeated_character_sequence_with_adamw() {
    let text = "hello kiln! ".repeat(8);
    let mut vocab: Vec<char> = text.chars().collect();
    vocab.sort_unstable();
    vocab.dedup();
    let ids: Vec<i64> = text.chars().map(|c| vocab.iter().position(|&v| v == c).unwrap() as i64).collect();
    let cfg = GptConfig {
        vocab_size: vocab.len(),
        n_positions: 16,
        n_embd: 32,
        n_layer: 2,
        n_head: 4,
        ..tiny(GptActivation::Gelu, false)
    };
    let model = Gpt::new(cfg, 0).unwrap();
    // Windows of 16 tokens at several offsets, each predicting the next character.
    let (b, t) = (6, 16);
    let starts = [0usize, 5, 11, 23, 40, 61];
    let x: Vec<i64> = starts.iter().flat_map(|&s| ids[s..s + t].to_vec()).collect();
    let y: Vec<i64> = starts.iter().flat_map(|&s| ids[s + 1..s + t + 1].to_vec()).collect();
    let (x, y) = (Tensor::from_vec_i64(x, &[b, t]).unwrap(), Tensor::from_vec_i64(y, &[b, t]).unwrap());
    let mut opt = AdamW::new(model.parameters(), 3e-3);
    let mut losses = Vec::new();
    for _ in 0..150 {
        opt.zero_grad();
        let loss = model.loss(&x, &y).unwrap();
        losses.push(loss.item().unwrap());
        loss.backward().unwrap();
        opt.step().unwrap();
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    // The start is about ln(vocab) (near-uniform logits from the N(0, 0.02) init).
    assert!((first - (vocab.len() as f32).ln()).abs() < 0.1, "first loss {first}");
    assert!(last < 0.1, "loss {first} -> {last}: {losses:?}");
}
