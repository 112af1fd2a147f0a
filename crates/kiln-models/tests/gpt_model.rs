//! Gpt: names and shapes, config parsing, and the forward pass against a naive f64 reference
//! written from the GPT-2 equations (loops, no kiln ops).

use kiln_autograd::gradcheck::uniform;
use kiln_autograd::{Array, Tensor};
use kiln_models::gpt::conv1d_gpt2;
use kiln_models::{Conv1D, Gpt, GptActivation, GptConfig};
use kiln_nn::{Forward, Module};
use std::collections::BTreeMap;

fn tiny(act: GptActivation, tied: bool) -> GptConfig {
    GptConfig {
        vocab_size: 11,
        n_positions: 9,
        n_embd: 12,
        n_layer: 2,
        n_head: 3,
        n_inner: Some(20),
        activation_function: act,
        resid_pdrop: 0.0,
        embd_pdrop: 0.0,
        attn_pdrop: 0.0,
        tie_word_embeddings: tied,
        ..GptConfig::default()
    }
}

/// Replaces every parameter with uniform values (biases and norms included, so that none of
/// them is trivially zero or one).
fn randomize(model: &Gpt, seed: u64) {
    let state: BTreeMap<String, Array> = model
        .named_parameters()
        .into_iter()
        .enumerate()
        .map(|(i, (n, t))| (n, uniform(t.shape(), -0.6, 0.6, seed + i as u64)))
        .collect();
    assert!(model.load_state_dict(&state, true).unwrap().is_clean());
}

// ------------------------------------------------------------------ reference

fn erf(x: f64) -> f64 {
    // Abramowitz & Stegun 7.1.26 is only 1.5e-7 accurate; use the series / continued fraction.
    if x.abs() < 3.0 {
        // Maclaurin series: erf x = 2/√π Σ (−1)^n x^(2n+1) / (n! (2n+1)).
        let mut sum = 0.0;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        x.signum() * (1.0 - (-x * x).exp() / (x.abs() * std::f64::consts::PI.sqrt()) * (1.0 - 0.5 / (x * x)))
    }
}

fn act(a: GptActivation, x: f64) -> f64 {
    match a {
        GptActivation::GeluNew => {
            0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        }
        GptActivation::Gelu => 0.5 * x * (1.0 + erf(x / 2f64.sqrt())),
        GptActivation::Relu => x.max(0.0),
        GptActivation::Silu => x / (1.0 + (-x).exp()),
    }
}

struct Ref<'a> {
    p: BTreeMap<String, Vec<f64>>,
    c: &'a GptConfig,
}

impl Ref<'_> {
    fn new(model: &Gpt) -> Ref<'_> {
        let p = model
            .state_dict()
            .into_iter()
            .map(|(n, a)| (n, a.to_vec_f32().unwrap().into_iter().map(f64::from).collect()))
            .collect();
        Ref { p, c: model.config() }
    }

    fn ln(&self, x: &[Vec<f64>], name: &str) -> Vec<Vec<f64>> {
        let (w, b) = (&self.p[&format!("{name}.weight")], &self.p[&format!("{name}.bias")]);
        x.iter()
            .map(|r| {
                let n = r.len() as f64;
                let m = r.iter().sum::<f64>() / n;
                let v = r.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / n;
                let s = 1.0 / (v + self.c.layer_norm_epsilon).sqrt();
                r.iter().enumerate().map(|(i, a)| (a - m) * s * w[i] + b[i]).collect()
            })
            .collect()
    }

    /// x·W + b with W [in, out] stored row-major.
    fn conv(&self, x: &[Vec<f64>], name: &str) -> Vec<Vec<f64>> {
        let (w, b) = (&self.p[&format!("{name}.weight")], &self.p[&format!("{name}.bias")]);
        let out = b.len();
        x.iter()
            .map(|r| {
                (0..out).map(|j| b[j] + r.iter().enumerate().map(|(i, a)| a * w[i * out + j]).sum::<f64>()).collect()
            })
            .collect()
    }

    /// Hidden states [T][E] of one sequence; `keep[j]` false excludes key j.
    fn hidden(&self, ids: &[i64], keep: &[bool]) -> Vec<Vec<f64>> {
        let (e, nh) = (self.c.n_embd, self.c.n_head);
        let d = e / nh;
        let (wte, wpe) = (&self.p["wte.weight"], &self.p["wpe.weight"]);
        let mut h: Vec<Vec<f64>> = ids
            .iter()
            .enumerate()
            .map(|(t, &id)| (0..e).map(|c| wte[id as usize * e + c] + wpe[t * e + c]).collect())
            .collect();
        let tl = ids.len();
        for l in 0..self.c.n_layer {
            let x = self.ln(&h, &format!("h.{l}.ln_1"));
            let qkv = self.conv(&x, &format!("h.{l}.attn.c_attn"));
            let mut ctx = vec![vec![0.0; e]; tl];
            for hh in 0..nh {
                for t in 0..tl {
                    let q = &qkv[t][hh * d..(hh + 1) * d];
                    let allowed: Vec<usize> = (0..=t).filter(|&j| keep[j]).collect();
                    let s: Vec<f64> = allowed
                        .iter()
                        .map(|&j| {
                            let k = &qkv[j][e + hh * d..e + (hh + 1) * d];
                            q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (d as f64).sqrt()
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                    for (&j, sv) in allowed.iter().zip(&s) {
                        let p = (sv - m).exp() / z;
                        for dd in 0..d {
                            ctx[t][hh * d + dd] += p * qkv[j][2 * e + hh * d + dd];
                        }
                    }
                }
            }
            let a = self.conv(&ctx, &format!("h.{l}.attn.c_proj"));
            for (hr, ar) in h.iter_mut().zip(&a) {
                hr.iter_mut().zip(ar).for_each(|(x, y)| *x += y);
            }
            let x = self.ln(&h, &format!("h.{l}.ln_2"));
            let m: Vec<Vec<f64>> = self
                .conv(&x, &format!("h.{l}.mlp.c_fc"))
                .into_iter()
                .map(|r| r.into_iter().map(|v| act(self.c.activation_function, v)).collect())
                .collect();
            let m = self.conv(&m, &format!("h.{l}.mlp.c_proj"));
            for (hr, mr) in h.iter_mut().zip(&m) {
                hr.iter_mut().zip(mr).for_each(|(x, y)| *x += y);
            }
        }
        self.ln(&h, "ln_f")
    }

    fn logits(&self, h: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let e = self.c.n_embd;
        let w = self.p.get("lm_head.weight").unwrap_or(&self.p["wte.weight"]);
        h.iter().map(|r| (0..self.c.vocab_size).map(|v| (0..e).map(|c| r[c] * w[v * e + c]).sum()).collect()).collect()
    }
}

fn assert_close(actual: &[f32], expected: &[f64], tol: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!((a as f64 - e).abs() <= tol * (1.0 + e.abs()), "{what}[{i}]: {a} vs {e}");
    }
}

// ------------------------------------------------------------------ tests

#[test]
fn parameter_names_and_shapes_are_hugging_faces() {
    let model = Gpt::new(tiny(GptActivation::GeluNew, true), 0).unwrap();
    let got: Vec<(String, Vec<usize>)> =
        model.named_parameters().into_iter().map(|(n, t)| (n, t.shape().to_vec())).collect();
    let mut want = vec![("wte.weight".to_string(), vec![11, 12]), ("wpe.weight".into(), vec![9, 12])];
    for i in 0..2 {
        let p = |s: &str| format!("h.{i}.{s}");
        want.extend([
            (p("ln_1.weight"), vec![12]),
            (p("ln_1.bias"), vec![12]),
            (p("attn.c_attn.weight"), vec![12, 36]),
            (p("attn.c_attn.bias"), vec![36]),
            (p("attn.c_proj.weight"), vec![12, 12]),
            (p("attn.c_proj.bias"), vec![12]),
            (p("ln_2.weight"), vec![12]),
            (p("ln_2.bias"), vec![12]),
            (p("mlp.c_fc.weight"), vec![12, 20]),
            (p("mlp.c_fc.bias"), vec![20]),
            (p("mlp.c_proj.weight"), vec![20, 12]),
            (p("mlp.c_proj.bias"), vec![12]),
        ]);
    }
    want.extend([("ln_f.weight".into(), vec![12]), ("ln_f.bias".into(), vec![12])]);
    assert_eq!(got, want);
    assert!(model.named_buffers().is_empty());

    let untied = Gpt::new(tiny(GptActivation::Gelu, false), 0).unwrap();
    let last = untied.named_parameters().pop().unwrap();
    assert_eq!((last.0.as_str(), last.1.shape()), ("lm_head.weight", &[11usize, 12][..]));
}

#[test]
fn init_is_normal_002_with_zero_biases_and_unit_norms() {
    let cfg = GptConfig { n_embd: 64, n_head: 4, n_inner: None, ..tiny(GptActivation::Gelu, false) };
    let model = Gpt::new(cfg, 3).unwrap();
    for (name, t) in model.named_parameters() {
        let v = t.to_vec_f32().unwrap();
        assert!(t.requires_grad(), "{name}");
        if name.contains(".ln_") || name.starts_with("ln_f") {
            let want = if name.ends_with("weight") { 1.0 } else { 0.0 };
            assert!(v.iter().all(|&x| x == want), "{name}");
        } else if name.ends_with(".bias") {
            assert!(v.iter().all(|&x| x == 0.0), "{name}");
        } else {
            let n = v.len() as f64;
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
            let std = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
            assert!(mean.abs() < 4.0 * 0.02 / n.sqrt() + 1e-4, "{name}: mean {mean}");
            assert!((std - 0.02).abs() < 0.15 * 0.02, "{name}: std {std}");
        }
    }
    // Same seed, same model; another seed, another model.
    let again = Gpt::new(model.config().clone(), 3).unwrap();
    let other = Gpt::new(model.config().clone(), 4).unwrap();
    let w = |m: &Gpt| m.wte.weight.to_vec_f32().unwrap();
    assert_eq!(w(&model), w(&again));
    assert_ne!(w(&model), w(&other));
}

#[test]
fn char_model_config_has_the_expected_parameter_count() {
    // 4 layers, 4 heads, d 128, ctx 128, untied head without bias, vocab 65:
    // wte 65·128 + wpe 128·128 + 4·(2·256 + 128·384 + 384 + 128·128 + 128 + 128·512 + 512 + 512·128 + 128)
    // + ln_f 256 + lm_head 65·128.
    let cfg = GptConfig {
        vocab_size: 65,
        n_positions: 128,
        n_embd: 128,
        n_layer: 4,
        n_head: 4,
        activation_function: GptActivation::Gelu,
        resid_pdrop: 0.0,
        embd_pdrop: 0.0,
        attn_pdrop: 0.0,
        tie_word_embeddings: false,
        ..GptConfig::default()
    };
    let per_layer = 2 * 256 + 128 * 384 + 384 + 128 * 128 + 128 + 128 * 512 + 512 + 512 * 128 + 128;
    let want = 65 * 128 + 128 * 128 + 4 * per_layer + 256 + 65 * 128;
    assert_eq!(Gpt::new(cfg, 0).unwrap().num_parameters().total, want);
}

#[test]
fn reads_a_hugging_face_gpt2_config_json() {
    let text = r#"{
      "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
      "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
      "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12,
      "n_inner": null, "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1,
      "summary_activation": null, "summary_first_dropout": 0.1, "summary_proj_to_labels": true,
      "summary_type": "cls_index", "summary_use_proj": true,
      "task_specific_params": {"text-generation": {"do_sample": true, "max_length": 50}},
      "vocab_size": 50257
    }"#;
    let c = GptConfig::from_json(text).unwrap();
    assert_eq!(c, GptConfig::default());
    assert_eq!((c.inner_dim(), c.head_dim()), (3072, 64));
    let c = GptConfig::from_json(r#"{"n_embd": 8, "n_head": 2, "activation_function": "gelu", "n_inner": 5}"#).unwrap();
    assert_eq!((c.n_embd, c.activation_function, c.inner_dim(), c.vocab_size), (8, GptActivation::Gelu, 5, 50257));
    assert!(GptConfig::from_json(r#"{"activation_function": "nope"}"#).is_err());
    let c = GptConfig { n_head: 5, ..GptConfig::default() };
    assert!(Gpt::new(c, 0).unwrap_err().to_string().contains("divisible"));
}

#[test]
fn conv1d_is_x_times_w_plus_b_with_w_in_out() {
    // [[1, 2]]·[[1, 2, 3], [4, 5, 6]] + [0.5, 0, −1] = [9.5, 12, 14].
    let w = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let b = Tensor::from_vec(vec![0.5, 0.0, -1.0], &[3]).unwrap();
    let layer = Conv1D::from_weights(w, b).unwrap();
    assert_eq!((layer.in_features(), layer.out_features()), (2, 3));
    let y = layer.forward(&Tensor::from_vec(vec![1.0, 2.0], &[1, 1, 2]).unwrap()).unwrap();
    assert_eq!(y.shape(), &[1, 1, 3]);
    assert_eq!(y.to_vec_f32().unwrap(), vec![9.5, 12.0, 14.0]);
    let x1 = Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap();
    assert_eq!(conv1d_gpt2(&x1, &layer.weight, None).unwrap().to_vec_f32().unwrap(), vec![9.0, 12.0, 15.0]);
    let err = layer.forward(&Tensor::zeros(&[4, 3])).unwrap_err().to_string();
    assert!(err.contains("[4, 3]") && err.contains("[2, 3]"), "{err}");
    assert!(conv1d_gpt2(&x1, &layer.weight, Some(&Tensor::zeros(&[2]))).is_err());
}

#[test]
fn forward_matches_the_reference_for_each_activation_and_head() {
    let ids = vec![3i64, 0, 10, 7, 7, 1, 5, 2, 9, 4, 6, 8, 2, 2];
    for (k, (a, tied)) in [
        (GptActivation::GeluNew, true),
        (GptActivation::Gelu, false),
        (GptActivation::Relu, true),
        (GptActivation::Silu, false),
    ]
    .into_iter()
    .enumerate()
    {
        let model = Gpt::new(tiny(a, tied), k as u64).unwrap();
        randomize(&model, 100 * k as u64);
        let r = Ref::new(&model);
        let x = Tensor::from_vec_i64(ids.clone(), &[2, 7]).unwrap();
        let hidden = model.forward_hidden(&x, None).unwrap();
        let logits = model.forward(&x).unwrap();
        assert_eq!(logits.shape(), &[2, 7, 11]);
        let (mut want_h, mut want_l) = (Vec::new(), Vec::new());
        for row in ids.chunks(7) {
            let h = r.hidden(row, &[true; 7]);
            want_l.extend(r.logits(&h).into_iter().flatten());
            want_h.extend(h.into_iter().flatten());
        }
        assert_close(&hidden.to_vec_f32().unwrap(), &want_h, 1e-4, &format!("{a:?} hidden"));
        assert_close(&logits.to_vec_f32().unwrap(), &want_l, 1e-4, &format!("{a:?} logits"));
    }
}

#[test]
fn padding_mask_excludes_padded_keys() {
    let model = Gpt::new(tiny(GptActivation::GeluNew, true), 5).unwrap();
    randomize(&model, 77);
    let r = Ref::new(&model);
    let ids = vec![3i64, 0, 10, 7, 7, 1, 5, 2, 9, 4, 0, 0];
    let mask = vec![1i64, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0];
    let x = Tensor::from_vec_i64(ids.clone(), &[2, 6]).unwrap();
    let m = Tensor::from_vec_i64(mask.clone(), &[2, 6]).unwrap();
    let hidden = model.forward_hidden(&x, Some(&m)).unwrap();
    let mut want = Vec::new();
    for (row, mrow) in ids.chunks(6).zip(mask.chunks(6)) {
        let keep: Vec<bool> = mrow.iter().map(|&v| v != 0).collect();
        want.extend(r.hidden(row, &keep).into_iter().flatten());
    }
    assert_close(&hidden.to_vec_f32().unwrap(), &want, 1e-4, "masked hidden");
    // The unpadded row equals its unmasked forward; the padded one does not (at padded queries).
    let plain = model.forward_hidden(&x, None).unwrap().to_vec_f32().unwrap();
    let got = hidden.to_vec_f32().unwrap();
    assert_eq!(&got[..72], &plain[..72]);
    assert_eq!(&got[72..72 + 48], &plain[72..72 + 48]);
    assert_ne!(&got[72 + 48..], &plain[72 + 48..]);
    let bad = Tensor::from_vec_i64(vec![1; 6], &[1, 6]).unwrap();
    assert!(model.forward_hidden(&x, Some(&bad)).is_err());
}

#[test]
fn rejects_bad_ids_and_too_long_inputs() {
    let model = Gpt::new(tiny(GptActivation::GeluNew, true), 0).unwrap();
    let too_long = Tensor::from_vec_i64(vec![0; 10], &[1, 10]).unwrap();
    assert!(model.forward(&too_long).unwrap_err().to_string().contains("n_positions"));
    assert!(model.forward(&Tensor::zeros(&[1, 3])).is_err());
    assert!(model.forward(&Tensor::from_vec_i64(vec![0, 11], &[1, 2]).unwrap()).is_err());
}

#[test]
fn dropout_acts_only_in_training_mode() {
    let cfg = GptConfig { resid_pdrop: 0.2, embd_pdrop: 0.2, attn_pdrop: 0.2, ..tiny(GptActivation::GeluNew, true) };
    let mut model = Gpt::new(cfg, 1).unwrap();
    randomize(&model, 9);
    let x = Tensor::from_vec_i64(vec![1, 2, 3, 4, 5], &[1, 5]).unwrap();
    assert!(model.is_training());
    let a = model.forward(&x).unwrap().to_vec_f32().unwrap();
    let b = model.forward(&x).unwrap().to_vec_f32().unwrap();
    assert_ne!(a, b, "two training passes draw different masks");
    model.eval();
    let c = model.forward(&x).unwrap().to_vec_f32().unwrap();
    assert_eq!(c, model.forward(&x).unwrap().to_vec_f32().unwrap());
    assert_ne!(a, c);
    // Without dropout probabilities, training mode is the evaluation forward.
    let plain = Gpt::new(tiny(GptActivation::GeluNew, true), 1).unwrap();
    randomize(&plain, 9);
    assert!(plain.is_training());
    assert_eq!(plain.forward(&x).unwrap().to_vec_f32().unwrap(), c);
}

#[test]
fn from_state_dict_takes_transformer_prefixed_names_and_ignores_buffers() {
    let model = Gpt::new(tiny(GptActivation::GeluNew, true), 2).unwrap();
    randomize(&model, 4);
    let mut state: BTreeMap<String, Array> =
        model.state_dict().into_iter().map(|(n, a)| (format!("transformer.{n}"), a)).collect();
    state.insert("transformer.h.0.attn.bias".into(), Array::ones(&[1, 1, 9, 9]));
    let loaded = Gpt::from_state_dict(model.config().clone(), &state).unwrap();
    assert!(!loaded.is_training());
    let x = Tensor::from_vec_i64(vec![4, 2, 8], &[1, 3]).unwrap();
    assert_eq!(loaded.forward(&x).unwrap().to_vec_f32().unwrap(), model.forward(&x).unwrap().to_vec_f32().unwrap());
    state.remove("transformer.ln_f.bias");
    let err = Gpt::from_state_dict(model.config().clone(), &state).unwrap_err().to_string();
    assert!(err.contains("ln_f.bias"), "{err}");
}
