//! LoRA: injection by name into a derived model, training only the adapters, gradients,
//! merging back to the original names and shapes, adapter dropout, errors.

use kiln_autograd::gradcheck::{check_gradients, uniform};
use kiln_autograd::{Array, Tensor};
use kiln_nn::init::rng;
use kiln_nn::lora::{inject_lora, lora_parameters, merge_lora, LoraConfig};
use kiln_nn::{Forward, Linear, Module, ReLU, Sequential};
use std::collections::BTreeMap;

const D: usize = 6;
const LAYERS: usize = 2;
const CLASSES: usize = 3;

#[derive(Module)]
struct SelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
}

#[derive(Module)]
struct Attention {
    #[module(rename = "self")]
    self_: SelfAttention,
    output: Linear,
}

#[derive(Module)]
struct Layer {
    attention: Attention,
}

#[derive(Module)]
struct Encoder {
    layer: Vec<Layer>,
}

/// A BERT-like tree of Linears: `encoder.layer.0.attention.self.query`, ..., `classifier`.
#[derive(Module)]
struct Model {
    encoder: Encoder,
    classifier: Linear,
}

impl Model {
    fn new(seed: u64) -> Model {
        let mut r = rng(seed);
        let mut lin = |i, o| Linear::new(i, o, true, &mut r);
        let layer = (0..LAYERS)
            .map(|_| Layer {
                attention: Attention {
                    self_: SelfAttention { query: lin(D, D), key: lin(D, D), value: lin(D, D) },
                    output: lin(D, D),
                },
            })
            .collect();
        Model { encoder: Encoder { layer }, classifier: lin(D, CLASSES) }
    }

    /// `h ← h + tanh(output(query(h)·key(h) + value(h)))` per layer, then the classifier.
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.clone();
        for l in &self.encoder.layer {
            let a = &l.attention;
            let q = a.self_.query.forward(&h).unwrap();
            let k = a.self_.key.forward(&h).unwrap();
            let v = a.self_.value.forward(&h).unwrap();
            let mixed = (&q * &k).try_add(&v).unwrap();
            h = h.try_add(&a.output.forward(&mixed).unwrap().try_tanh().unwrap()).unwrap();
        }
        self.classifier.forward(&h).unwrap()
    }
}

fn input(rows: usize, seed: u64) -> Tensor {
    Tensor::from_array(uniform(&[rows, D], -1.0, 1.0, seed))
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_vec_f32().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn shapes(sd: &BTreeMap<String, Array>) -> Vec<(String, Vec<usize>)> {
    sd.iter().map(|(k, v)| (k.clone(), v.shape().to_vec())).collect()
}

/// `x·Wᵀ` by loops: `x` `[n, k]` row-major, `w` `[m, k]`.
fn matmul_t(x: &[f32], w: &[f32], n: usize, k: usize, m: usize) -> Vec<f32> {
    let mut out = vec![0.0; n * m];
    for i in 0..n {
        for j in 0..m {
            out[i * m + j] = (0..k).map(|p| x[i * k + p] * w[j * k + p]).sum();
        }
    }
    out
}

const TARGETS: [&str; 2] = ["*.query", "*.value"];
const RANK: usize = 2;
const ALPHA: f32 = 3.0;

fn inject(m: &mut Model, config: &LoraConfig) {
    for (i, p) in TARGETS.iter().enumerate() {
        assert_eq!(inject_lora(m, p, &config.seed(i as u64)).unwrap(), LAYERS, "{p}");
    }
}

#[test]
fn adapted_model_starts_equal_to_the_base_model() {
    let mut m = Model::new(1);
    let x = input(5, 2);
    let base = values(&m.forward(&x));
    inject(&mut m, &LoraConfig::new(RANK, ALPHA));
    // B = 0: the update is exactly zero.
    assert_eq!(values(&m.forward(&x)), base);
    // A is drawn like a Linear weight (±1/√in), B is zeros.
    let bound = 1.0 / (D as f32).sqrt();
    for (name, t) in lora_parameters(&m) {
        let v = values(&t);
        if name.ends_with("lora_A.weight") {
            assert_eq!(t.shape(), &[RANK, D], "{name}");
            assert!(v.iter().all(|x| x.abs() <= bound) && v.iter().any(|&x| x != v[0]), "{name}: {v:?}");
        } else {
            assert_eq!(t.shape(), &[D, RANK], "{name}");
            assert!(v.iter().all(|&x| x == 0.0), "{name}");
        }
    }
}

#[test]
fn only_the_adapters_train_and_they_are_named_like_peft() {
    let mut m = Model::new(3);
    let base = m.num_parameters();
    inject(&mut m, &LoraConfig::new(RANK, ALPHA));
    let per_linear = RANK * (D + D);
    let adapters = 2 * LAYERS * per_linear;
    let c = m.num_parameters();
    assert_eq!(c.total, base.total + adapters);
    assert_eq!(c.trainable, adapters);

    let trainable: Vec<String> =
        m.named_parameters().into_iter().filter(|(_, t)| t.requires_grad()).map(|(n, _)| n).collect();
    let mut expected = Vec::new();
    for l in 0..LAYERS {
        for which in ["query", "value"] {
            for ab in ["A", "B"] {
                expected.push(format!("encoder.layer.{l}.attention.self.{which}.lora_{ab}.weight"));
            }
        }
    }
    assert_eq!(trainable, expected);
    let names: Vec<String> = lora_parameters(&m).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, expected);
    let sd = m.state_dict();
    assert_eq!(sd["encoder.layer.1.attention.self.value.lora_B.weight"].shape(), &[D, RANK]);
    // The adapters are part of their Linear, not modules of their own.
    assert_eq!(m.named_modules().len(), 1 + 1 + LAYERS * (1 + 1 + 1 + 4) + 1);
}

#[test]
fn linear_without_an_adapter_is_one_fused_op_and_keeps_its_names() {
    let mut r = rng(4);
    let mut fc = Linear::new(D, 4, true, &mut r);
    let x = input(3, 5).requires_grad_(true);
    assert_eq!(fc.forward(&x).unwrap().grad_fn_name(), Some("linear"));
    assert_eq!(fc.state_dict().into_keys().collect::<Vec<_>>(), ["bias", "weight"]);
    fc.add_lora(&LoraConfig::new(2, 2.0), &mut r).unwrap();
    assert_eq!(fc.forward(&x).unwrap().grad_fn_name(), Some("add"));
    assert_eq!(fc.state_dict().into_keys().collect::<Vec<_>>(), ["bias", "lora_A.weight", "lora_B.weight", "weight"]);
    assert!(fc.take_lora().is_some());
    assert_eq!(fc.forward(&x).unwrap().grad_fn_name(), Some("linear"));
}

/// A Linear `[out=4, in=5]` with an adapter of rank 3 whose tensors are `ts[1..5]`.
fn adapted_linear(ts: &[Tensor], alpha: f32) -> Linear {
    let mut fc = Linear::from_weights(ts[1].clone(), Some(ts[2].clone())).unwrap();
    fc.add_lora(&LoraConfig::new(3, alpha), &mut rng(0)).unwrap();
    fc.visit_mut("", &mut |n, t, _| match n {
        "lora_A.weight" => *t = ts[3].clone(),
        "lora_B.weight" => *t = ts[4].clone(),
        _ => {}
    });
    fc
}

#[test]
fn adapted_forward_matches_the_closed_form() {
    let (n, i, o, r) = (2, 5, 4, 3);
    let arrays = [
        uniform(&[n, i], -1.0, 1.0, 10),
        uniform(&[o, i], -1.0, 1.0, 11),
        uniform(&[o], -1.0, 1.0, 12),
        uniform(&[r, i], -1.0, 1.0, 13),
        uniform(&[o, r], -1.0, 1.0, 14),
    ];
    let ts: Vec<Tensor> = arrays.iter().map(|a| Tensor::from_array(a.clone())).collect();
    let fc = adapted_linear(&ts, 1.5);
    let v: Vec<Vec<f32>> = arrays.iter().map(|a| a.to_vec_f32().unwrap()).collect();
    let base = matmul_t(&v[0], &v[1], n, i, o);
    let xa = matmul_t(&v[0], &v[3], n, i, r);
    let xab = matmul_t(&xa, &v[4], n, r, o);
    let want: Vec<f32> = (0..n * o).map(|k| base[k] + v[2][k % o] + 0.5 * xab[k]).collect();
    assert!(max_abs_diff(&values(&fc.forward(&ts[0]).unwrap()), &want) < 1e-5);
}

#[test]
fn adapted_linear_gradients_match_finite_differences() {
    // Inputs x, W, b, A, B with B non-zero so every gradient is informative.
    let inputs = [
        uniform(&[3, 5], -1.0, 1.0, 20),
        uniform(&[4, 5], -1.0, 1.0, 21),
        uniform(&[4], -1.0, 1.0, 22),
        uniform(&[2, 5], -1.0, 1.0, 23),
        uniform(&[4, 2], -1.0, 1.0, 24),
    ];
    check_gradients(&inputs, |t| {
        let mut fc = Linear::from_weights(t[1].clone(), Some(t[2].clone()))?;
        fc.add_lora(&LoraConfig::new(2, 3.0), &mut rng(0))?;
        fc.visit_mut("", &mut |n, p, _| match n {
            "lora_A.weight" => *p = t[3].clone(),
            "lora_B.weight" => *p = t[4].clone(),
            _ => {}
        });
        fc.forward(&t[0])
    })
    .unwrap();
}

#[test]
fn training_then_merging_keeps_the_outputs_and_restores_the_original_state_dict() {
    let mut m = Model::new(7);
    let original = m.state_dict();
    let x = input(8, 8);
    let target = Tensor::from_array(uniform(&[8, CLASSES], -1.0, 1.0, 9));
    inject(&mut m, &LoraConfig::new(RANK, ALPHA));
    let params = lora_parameters(&m);
    let lr = 0.2;
    let mut losses = Vec::new();
    for _ in 0..5 {
        m.zero_grad();
        let err = m.forward(&x).try_sub(&target).unwrap();
        let loss = (&err * &err).mean_all();
        losses.push(loss.item().unwrap());
        loss.backward().unwrap();
        for (_, p) in &params {
            let g = p.grad().unwrap();
            p.update_data(|w| *w = w.sub(&g.mul_scalar(lr).unwrap()).unwrap());
        }
        // The frozen base weights get no gradient.
        for (name, p) in m.named_parameters() {
            assert_eq!(p.grad().is_some(), name.contains(".lora_"), "{name}");
        }
    }
    assert!(losses[4] < losses[0], "{losses:?}");

    let adapted = values(&m.forward(&x));
    // What merging must add to one target weight: (alpha/r)·B·A, by loops.
    let sd = m.state_dict();
    let q = "encoder.layer.1.attention.self.query";
    let a = sd[&format!("{q}.lora_A.weight")].to_vec_f32().unwrap();
    let b = sd[&format!("{q}.lora_B.weight")].to_vec_f32().unwrap();
    assert!(b.iter().any(|&v| v != 0.0), "B was trained");
    let w0 = original[&format!("{q}.weight")].to_vec_f32().unwrap();

    assert_eq!(merge_lora(&mut m).unwrap(), 2 * LAYERS);
    assert!(lora_parameters(&m).is_empty());
    let merged = values(&m.forward(&x));
    assert!(max_abs_diff(&merged, &adapted) < 1e-5, "{merged:?} vs {adapted:?}");

    let after = m.state_dict();
    assert_eq!(shapes(&after), shapes(&original));
    let w1 = after[&format!("{q}.weight")].to_vec_f32().unwrap();
    for o in 0..D {
        for i in 0..D {
            let d: f32 = (0..RANK).map(|k| b[o * RANK + k] * a[k * D + i]).sum::<f32>() * ALPHA / RANK as f32;
            assert!((w1[o * D + i] - (w0[o * D + i] + d)).abs() < 1e-6);
        }
    }
    // Layers without an adapter are untouched, biases too.
    for name in
        ["encoder.layer.0.attention.self.key.weight", "encoder.layer.1.attention.output.weight", "classifier.weight"]
    {
        assert_eq!(after[name].to_vec_f32().unwrap(), original[name].to_vec_f32().unwrap(), "{name}");
    }
    assert_eq!(after[&format!("{q}.bias")].to_vec_f32().unwrap(), original[&format!("{q}.bias")].to_vec_f32().unwrap());
    // Merging again finds nothing; the merged model loads strictly into a fresh one.
    assert_eq!(merge_lora(&mut m).unwrap(), 0);
    let fresh = Model::new(99);
    assert!(fresh.load_state_dict(&after, true).unwrap().is_clean());
    assert!(max_abs_diff(&values(&fresh.forward(&x)), &merged) == 0.0);
}

/// One Linear `[4, 4]` inside a Sequential (reached through `Box<dyn ForwardModule>`) with an
/// identity adapter (A = B = I, scaling 1), so the update is exactly `dropout(x)`.
fn identity_adapted(dropout: f32) -> Sequential {
    let mut s = Sequential::new().with(Linear::new(4, 4, true, &mut rng(30))).with(ReLU);
    assert_eq!(inject_lora(&mut s, "0", &LoraConfig::new(4, 4.0).dropout(dropout).seed(5)).unwrap(), 1);
    let eye = Tensor::from_vec((0..16).map(|k| if k % 5 == 0 { 1.0 } else { 0.0 }).collect(), &[4, 4]).unwrap();
    s.visit("", &mut |n, t, _| {
        if n.contains("lora_") {
            t.set_data(eye.data()).unwrap();
        }
    });
    s
}

#[test]
fn adapter_dropout_in_training_mode_only_touches_the_adapter_path() {
    let s = identity_adapted(0.5);
    let fc = &s.layers()[0];
    let x = Tensor::from_array(uniform(&[16, 4], 0.5, 1.0, 31));
    let xv = values(&x);
    let (w, b) = (s.state_dict()["0.weight"].to_vec_f32().unwrap(), s.state_dict()["0.bias"].to_vec_f32().unwrap());
    let base: Vec<f32> = matmul_t(&xv, &w, 16, 4, 4).iter().enumerate().map(|(k, v)| v + b[k % 4]).collect();

    let y = values(&fc.forward(&x).unwrap());
    let (mut dropped, mut kept) = (0, 0);
    for k in 0..xv.len() {
        let update = y[k] - base[k];
        if update.abs() < 1e-5 {
            dropped += 1;
        } else {
            // Kept elements are scaled by 1/(1-p) = 2; the base path is whole either way.
            assert!((update - 2.0 * xv[k]).abs() < 1e-5, "element {k}: update {update}, x {}", xv[k]);
            kept += 1;
        }
    }
    assert!(dropped > 8 && kept > 8, "dropped {dropped}, kept {kept}");

    // Evaluation mode: no dropout, the update is x itself.
    let mut s = s;
    s.eval();
    let y = values(&s.layers()[0].forward(&x).unwrap());
    let want: Vec<f32> = base.iter().zip(&xv).map(|(b, x)| b + x).collect();
    assert!(max_abs_diff(&y, &want) < 1e-5);
}

#[test]
fn adapter_dropout_starts_in_the_models_mode() {
    let mut m = Model::new(40);
    // Model has no mode flag of its own; the first adapter with dropout gives it one.
    inject_lora(&mut m, "*.query", &LoraConfig::new(2, 2.0).dropout(0.3)).unwrap();
    assert!(m.is_training());
    m.eval();
    inject_lora(&mut m, "*.key", &LoraConfig::new(2, 2.0).dropout(0.3)).unwrap();
    assert!(!m.encoder.layer[0].attention.self_.key.is_training());
    m.train();
    assert!(m.encoder.layer[1].attention.self_.key.is_training());
}

#[test]
fn bad_patterns_and_configs_are_errors_that_change_nothing() {
    let mut m = Model::new(50);
    let before = m.num_parameters();
    let e = inject_lora(&mut m, "*.qurey", &LoraConfig::default()).unwrap_err().to_string();
    assert!(e.contains("\"*.qurey\"") && e.contains("encoder.layer.0.attention.self.query"), "{e}");
    let e = inject_lora(&mut m, "*.attention", &LoraConfig::default()).unwrap_err().to_string();
    assert!(e.contains("not Linear"), "{e}");
    assert!(inject_lora(&mut m, "*", &LoraConfig::new(0, 1.0)).is_err());
    assert!(inject_lora(&mut m, "*", &LoraConfig::new(2, 1.0).dropout(1.0)).is_err());
    assert_eq!(m.num_parameters(), before);

    // Adapting an adapted layer again is refused, for every match, before any change.
    assert_eq!(inject_lora(&mut m, "*.layer.0.*.query", &LoraConfig::default()).unwrap(), 1);
    let adapted = m.num_parameters();
    let e = inject_lora(&mut m, "*.query", &LoraConfig::default()).unwrap_err().to_string();
    assert!(e.contains("already has a LoRA adapter"), "{e}");
    assert_eq!(m.num_parameters(), adapted);
    assert_eq!(lora_parameters(&m).len(), 2);
}
