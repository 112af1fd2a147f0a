//! Linear, the activation layers, MultiheadAttention and TransformerEncoderLayer: PyTorch's
//! parameter names, order and shapes, forward shapes, finite-difference checks through the
//! layers (dropout 0), MultiheadAttention against a hand composition of linear + attention,
//! and pre- vs post-norm against their formulas.

use kiln_autograd::gradcheck::{check_gradients, uniform};
use kiln_autograd::ops::unary::GeluApproximate;
use kiln_autograd::{Array, Result, Tensor};
use kiln_nn::init::rng;
use kiln_nn::{
    Activation, Forward, LeakyReLU, Linear, LogSoftmax, MhaOptions, Module, MultiheadAttention, ReLU, SiLU, Sigmoid,
    Softmax, Softplus, Tanh, TransformerEncoderLayer, TransformerEncoderLayerConfig, GELU,
};

fn names_shapes(m: &dyn Module) -> Vec<(String, Vec<usize>)> {
    m.named_parameters().into_iter().map(|(n, t)| (n, t.shape().to_vec())).collect()
}

fn close(a: &Tensor, b: &Tensor, tol: f32, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shape");
    let (a, b) = (a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

/// Replaces every parameter of `m` (in `named_parameters` order) by the given tensors.
fn substitute(m: &mut dyn Module, params: &[Tensor]) {
    let mut i = 0;
    m.visit_mut("", &mut |_, t, k| {
        if k == kiln_nn::TensorKind::Parameter {
            *t = params[i].clone();
            i += 1;
        }
    });
    assert_eq!(i, params.len());
}

fn param_arrays(m: &dyn Module) -> Vec<Array> {
    m.parameters().iter().map(|t| t.data()).collect()
}

// ------------------------------------------------------------------------------ Linear

#[test]
fn linear_names_init_and_forward() {
    let fc = Linear::new(5, 3, true, &mut rng(1));
    assert_eq!(names_shapes(&fc), [("weight".to_string(), vec![3, 5]), ("bias".to_string(), vec![3])]);
    let bound = 1.0 / 5f32.sqrt();
    assert!(fc.weight.to_vec_f32().unwrap().iter().all(|w| w.abs() <= bound));
    assert!(fc.bias.as_ref().unwrap().to_vec_f32().unwrap().iter().all(|w| w.abs() <= bound));
    assert!(Linear::new(5, 3, false, &mut rng(1)).bias.is_none());
    assert_eq!(fc.forward(&Tensor::zeros(&[2, 4, 5])).unwrap().shape(), &[2, 4, 3]);
    assert_eq!(fc.forward(&Tensor::zeros(&[5])).unwrap().shape(), &[3]);
    assert!(fc.forward(&Tensor::zeros(&[2, 4])).is_err());
    // Hand-computed: y = x·Wᵀ + b.
    let w = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    let b = Tensor::from_vec(vec![0.5, -1.0], &[2]).unwrap();
    let fc = Linear::from_weights(w, Some(b)).unwrap();
    let y = fc.forward(&Tensor::from_vec(vec![1.0, -1.0], &[1, 2]).unwrap()).unwrap();
    assert_eq!(y.to_vec_f32().unwrap(), vec![-0.5, -2.0]);
}

#[test]
fn gradcheck_through_linear() {
    let x = uniform(&[4, 3], -1.0, 1.0, 11);
    let fc = Linear::new(3, 2, true, &mut rng(2));
    let mut inputs = vec![x];
    inputs.extend(param_arrays(&fc));
    check_gradients(&inputs, |t| {
        let fc = Linear::from_weights(t[1].clone(), Some(t[2].clone()))?;
        fc.forward(&t[0])?.try_tanh()
    })
    .unwrap();
}

// ------------------------------------------------------------------------------ activations

#[test]
fn activations_apply_their_ops() {
    let x = Tensor::from_vec(vec![-2.0, -0.5, 0.7, 3.0], &[2, 2]).unwrap();
    let v = |t: Result<Tensor>| t.unwrap().to_vec_f32().unwrap();
    let xs = [-2.0f32, -0.5, 0.7, 3.0];
    assert_eq!(v(ReLU.forward(&x)), vec![0.0, 0.0, 0.7, 3.0]);
    assert_eq!(v(LeakyReLU::default().forward(&x)), vec![-0.02, -0.005, 0.7, 3.0]);
    let close_to = |got: Vec<f32>, want: Vec<f32>| {
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    };
    close_to(v(Tanh.forward(&x)), xs.iter().map(|x| x.tanh()).collect());
    close_to(v(Sigmoid.forward(&x)), xs.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect());
    close_to(v(SiLU.forward(&x)), xs.iter().map(|x| x / (1.0 + (-x).exp())).collect());
    close_to(v(Softplus::default().forward(&x)), xs.iter().map(|x| (1.0 + x.exp()).ln()).collect());
    // tanh-GELU of 3: 0.5·3·(1 + tanh(√(2/π)(3 + 0.044715·27))).
    let g = v(GELU::new(GeluApproximate::Tanh).forward(&x))[3];
    let want = 0.5 * 3.0 * (1.0 + ((2.0 / std::f32::consts::PI).sqrt() * (3.0 + 0.044715 * 27.0)).tanh());
    assert!((g - want).abs() < 1e-5);
    assert!(v(GELU::default().forward(&x))[0] < 0.0);
    let s = v(Softmax::new(-1).forward(&x));
    assert!((s[0] + s[1] - 1.0).abs() < 1e-6 && (s[2] + s[3] - 1.0).abs() < 1e-6);
    let s0 = v(Softmax::new(0).forward(&x));
    assert!((s0[0] + s0[2] - 1.0).abs() < 1e-6);
    let ls = v(LogSoftmax::new(1).forward(&x));
    assert!((ls[0].exp() + ls[1].exp() - 1.0).abs() < 1e-6);
    assert!(ReLU.named_parameters().is_empty() && Softmax::new(1).named_parameters().is_empty());
}

// ------------------------------------------------------------------------------ MultiheadAttention

#[test]
fn mha_names_and_shapes_match_pytorch() {
    let e = 6;
    let mha = MultiheadAttention::new(e, 3, 0.0, true, false, &mut rng(3)).unwrap();
    let want: Vec<(String, Vec<usize>)> = vec![
        ("in_proj_weight".into(), vec![3 * e, e]),
        ("in_proj_bias".into(), vec![3 * e]),
        ("out_proj.weight".into(), vec![e, e]),
        ("out_proj.bias".into(), vec![e]),
    ];
    assert_eq!(names_shapes(&mha), want);
    // PyTorch's init: Xavier-uniform in_proj_weight, zero biases.
    let bound = (6.0f32 / (4 * e) as f32).sqrt();
    assert!(mha.in_proj_weight.to_vec_f32().unwrap().iter().all(|w| w.abs() <= bound));
    assert!(mha.in_proj_bias.as_ref().unwrap().to_vec_f32().unwrap().iter().all(|&b| b == 0.0));
    assert!(mha.out_proj.bias.as_ref().unwrap().to_vec_f32().unwrap().iter().all(|&b| b == 0.0));
    assert!(MultiheadAttention::new(7, 2, 0.0, true, false, &mut rng(0)).is_err());
    // Shapes: sequence first [L, N, E], batch first [N, L, E], unbatched [L, E]; cross attention.
    assert_eq!(mha.forward(&Tensor::zeros(&[4, 2, e])).unwrap().shape(), &[4, 2, e]);
    let (q, kv) = (Tensor::zeros(&[4, 2, e]), Tensor::zeros(&[7, 2, e]));
    let (y, w) = mha.forward_with(&q, &kv, &kv, &MhaOptions { need_weights: true, ..Default::default() }).unwrap();
    assert_eq!((y.shape(), w.unwrap().shape()), (&[4, 2, e][..], &[2, 4, 7][..]));
    let opts = MhaOptions { need_weights: true, average_attn_weights: false, ..Default::default() };
    assert_eq!(mha.forward_with(&q, &kv, &kv, &opts).unwrap().1.unwrap().shape(), &[2, 3, 4, 7]);
    let u = Tensor::zeros(&[4, e]);
    assert_eq!(mha.forward_with(&u, &u, &u, &opts).unwrap().1.unwrap().shape(), &[3, 4, 4]);
    assert_eq!(mha.forward(&u).unwrap().shape(), &[4, e]);
}

/// Multi-head attention composed by hand from per-head slices of the weights, with the
/// attention written out as matmul + softmax. `x*` are batch first `[N, T, E]`; `mask` is
/// additive `[N, L, S]`.
fn mha_by_hand(m: &MultiheadAttention, xq: &Tensor, xk: &Tensor, xv: &Tensor, mask: Option<&Tensor>) -> Tensor {
    let (e, h) = (m.embed_dim(), m.num_heads());
    let d = e / h;
    let w = &m.in_proj_weight;
    let b = m.in_proj_bias.as_ref().unwrap();
    let mut heads = Vec::new();
    for hi in 0..h {
        let proj = |x: &Tensor, block: usize| {
            let r = (block * e + hi * d) as isize;
            x.linear(&w.narrow(0, r, d), Some(&b.narrow(0, r, d)))
        };
        let (q, k, v) = (proj(xq, 0), proj(xk, 1), proj(xv, 2));
        let mut s = q.matmul(&k.transpose(1, 2)).mul_scalar(1.0 / (d as f32).sqrt());
        if let Some(mk) = mask {
            s = &s + mk;
        }
        heads.push(s.softmax(-1).matmul(&v));
    }
    let refs: Vec<&Tensor> = heads.iter().collect();
    m.out_proj.forward(&Tensor::cat(&refs, -1)).unwrap()
}

#[test]
fn mha_matches_a_hand_composition() {
    let (e, h, n, l, s) = (8, 2, 2, 3, 5);
    let m = MultiheadAttention::new(e, h, 0.0, true, true, &mut rng(4)).unwrap();
    // Non-zero biases so that their slicing is tested too.
    m.in_proj_bias.as_ref().unwrap().set_data(uniform(&[3 * e], -0.5, 0.5, 40)).unwrap();
    m.out_proj.bias.as_ref().unwrap().set_data(uniform(&[e], -0.5, 0.5, 41)).unwrap();
    let xq = Tensor::from_array(uniform(&[n, l, e], -1.0, 1.0, 42));
    let xk = Tensor::from_array(uniform(&[n, s, e], -1.0, 1.0, 43));
    let xv = Tensor::from_array(uniform(&[n, s, e], -1.0, 1.0, 44));
    let want = mha_by_hand(&m, &xq, &xk, &xv, None);
    let (got, _) = m.forward_with(&xq, &xk, &xv, &MhaOptions::default()).unwrap();
    close(&got, &want, 1e-5, "fused cross attention");
    let (got, w) = m.forward_with(&xq, &xk, &xv, &MhaOptions { need_weights: true, ..Default::default() }).unwrap();
    close(&got, &want, 1e-5, "unfused cross attention");
    let w = w.unwrap().to_vec_f32().unwrap();
    for row in w.chunks(s) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    // Self-attention (the single-GEMM projection) and sequence-first layout.
    let want = mha_by_hand(&m, &xq, &xq, &xq, None);
    close(&m.forward(&xq).unwrap(), &want, 1e-5, "self attention");
    let m2 = MultiheadAttention::new(e, h, 0.0, true, false, &mut rng(4)).unwrap();
    m2.load_state_dict(&m.state_dict(), true).unwrap();
    let y = m2.forward(&xq.transpose(0, 1)).unwrap().transpose(0, 1);
    close(&y, &want, 1e-5, "sequence first");
    // Key padding (bool, 1 = ignore) plus a float attn_mask, against the additive form.
    let kpm = Array::from_vec(vec![0u8, 0, 0, 1, 1, 0, 1, 0, 0, 0], &[n, s]).unwrap();
    let am = uniform(&[l, s], -1.0, 1.0, 45);
    let kpm_add: Vec<f32> =
        kpm.to_vec::<u8>().unwrap().iter().map(|&b| if b == 1 { f32::NEG_INFINITY } else { 0.0 }).collect();
    let total = Array::from_vec(kpm_add, &[n, 1, s]).unwrap().add(&am).unwrap();
    let want = mha_by_hand(&m, &xq, &xk, &xv, Some(&Tensor::from_array(total)));
    let (kpm_t, am_t) = (Tensor::from_array(kpm), Tensor::from_array(am));
    for need_weights in [false, true] {
        let opts =
            MhaOptions { key_padding_mask: Some(&kpm_t), attn_mask: Some(&am_t), need_weights, ..Default::default() };
        close(&m.forward_with(&xq, &xk, &xv, &opts).unwrap().0, &want, 1e-5, "masked");
    }
    // Causal: a bool attn_mask with 1 above the diagonal is the same as is_causal.
    let causal = Array::from_vec((0..l * l).map(|i| u8::from(i % l > i / l)).collect::<Vec<u8>>(), &[l, l]).unwrap();
    let causal = Tensor::from_array(causal);
    let a = m.forward_with(&xq, &xq, &xq, &MhaOptions { attn_mask: Some(&causal), ..Default::default() }).unwrap().0;
    let b = m.forward_with(&xq, &xq, &xq, &MhaOptions { is_causal: true, ..Default::default() }).unwrap().0;
    let c = m.forward_with(&xq, &xq, &xq, &MhaOptions { is_causal: true, need_weights: true, ..Default::default() });
    close(&a, &b, 1e-6, "causal");
    close(&c.unwrap().0, &b, 1e-5, "causal unfused");
}

#[test]
fn gradcheck_through_mha() {
    let m = MultiheadAttention::new(4, 2, 0.0, true, true, &mut rng(5)).unwrap();
    let mut inputs = vec![uniform(&[2, 3, 4], -1.0, 1.0, 51)];
    inputs.extend(param_arrays(&m));
    check_gradients(&inputs, |t| {
        let mut m = MultiheadAttention::new(4, 2, 0.0, true, true, &mut rng(5))?;
        substitute(&mut m, &t[1..]);
        m.forward(&t[0])
    })
    .unwrap();
}

// ------------------------------------------------------------------------------ TransformerEncoderLayer

fn small_layer(norm_first: bool, activation: Activation) -> TransformerEncoderLayer {
    let mut cfg = TransformerEncoderLayerConfig::new(4, 2);
    cfg.dim_feedforward = 6;
    cfg.dropout = 0.0;
    cfg.batch_first = true;
    cfg.norm_first = norm_first;
    cfg.activation = activation;
    cfg.build(&mut rng(6)).unwrap()
}

#[test]
fn encoder_layer_names_and_shapes_match_pytorch() {
    let layer = TransformerEncoderLayer::new(8, 2, &mut rng(7)).unwrap();
    let want: Vec<(&str, Vec<usize>)> = vec![
        ("self_attn.in_proj_weight", vec![24, 8]),
        ("self_attn.in_proj_bias", vec![24]),
        ("self_attn.out_proj.weight", vec![8, 8]),
        ("self_attn.out_proj.bias", vec![8]),
        ("linear1.weight", vec![2048, 8]),
        ("linear1.bias", vec![2048]),
        ("linear2.weight", vec![8, 2048]),
        ("linear2.bias", vec![8]),
        ("norm1.weight", vec![8]),
        ("norm1.bias", vec![8]),
        ("norm2.weight", vec![8]),
        ("norm2.bias", vec![8]),
    ];
    let want: Vec<(String, Vec<usize>)> = want.into_iter().map(|(n, s)| (n.to_string(), s)).collect();
    assert_eq!(names_shapes(&layer), want);
    // Sequence first by default.
    assert_eq!(layer.forward(&Tensor::zeros(&[5, 2, 8])).unwrap().shape(), &[5, 2, 8]);
    assert!(layer.forward(&Tensor::zeros(&[5, 2, 7])).is_err());
}

#[test]
fn pre_and_post_norm_follow_their_formulas() {
    let x = Tensor::from_array(uniform(&[2, 3, 4], -1.0, 1.0, 71));
    let ff =
        |l: &TransformerEncoderLayer, h: &Tensor| l.linear2.forward(&l.linear1.forward(h).unwrap().relu()).unwrap();
    let post = small_layer(false, Activation::Relu);
    let x1 = post.norm1.forward(&(&x + &post.self_attn.forward(&x).unwrap())).unwrap();
    let want = post.norm2.forward(&(&x1 + &ff(&post, &x1))).unwrap();
    let got = post.forward(&x).unwrap();
    close(&got, &want, 1e-5, "post-norm");
    // Post-norm output rows are normalized (norm2 starts as the identity affine).
    for row in got.to_vec_f32().unwrap().chunks(4) {
        let mean = row.iter().sum::<f32>() / 4.0;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3, "{mean} {var}");
    }
    let pre = small_layer(true, Activation::Relu);
    let x1 = &x + &pre.self_attn.forward(&pre.norm1.forward(&x).unwrap()).unwrap();
    let want = &x1 + &ff(&pre, &pre.norm2.forward(&x1).unwrap());
    let got_pre = pre.forward(&x).unwrap();
    close(&got_pre, &want, 1e-5, "pre-norm");
    // Same weights (same seed), different placement of the norms: different outputs.
    let diff: f32 =
        got.to_vec_f32().unwrap().iter().zip(got_pre.to_vec_f32().unwrap()).map(|(a, b)| (a - b).abs()).sum();
    assert!(diff > 1e-2, "{diff}");
}

#[test]
fn gradcheck_through_encoder_layer() {
    for (norm_first, act) in [(false, Activation::Relu), (true, Activation::Gelu)] {
        let layer = small_layer(norm_first, act);
        let mut inputs = vec![uniform(&[2, 3, 4], -1.0, 1.0, 81)];
        inputs.extend(param_arrays(&layer));
        check_gradients(&inputs, |t| {
            let mut l = small_layer(norm_first, act);
            substitute(&mut l, &t[1..]);
            l.forward(&t[0])
        })
        .unwrap_or_else(|e| panic!("norm_first {norm_first}: {e}"));
    }
}
