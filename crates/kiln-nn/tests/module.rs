//! The Module trait and its derive: names, freezing, counts, state dicts, modes.

use kiln_autograd::{Array, Tensor};
use kiln_nn::{Dropout, Forward, Module, TensorKind};
use std::collections::BTreeMap;

/// A tensor of `shape` filled with `v`, requiring grad.
fn param(shape: &[usize], v: f32) -> Tensor {
    Tensor::full(shape, v).requires_grad_(true)
}

#[derive(Module)]
struct Lin {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Lin {
    fn new(i: usize, o: usize, bias: bool) -> Lin {
        Lin { weight: param(&[o, i], 0.5), bias: bias.then(|| param(&[o], 0.1)) }
    }
}

/// A config type that does not implement Module.
#[derive(Clone, Debug, PartialEq)]
struct Config {
    name: &'static str,
}

#[derive(Module)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
    #[module(buffer)]
    running_mean: Tensor,
    #[module(buffer)]
    num_batches: Option<Tensor>,
    eps: f32,
    #[module(training)]
    training: bool,
}

impl Norm {
    fn new(n: usize) -> Norm {
        Norm {
            weight: param(&[n], 1.0),
            bias: param(&[n], 0.0),
            running_mean: Tensor::zeros(&[n]),
            num_batches: Some(Tensor::from_vec_i64(vec![0], &[]).unwrap()),
            eps: 1e-5,
            training: true,
        }
    }
}

#[derive(Module)]
struct Attention {
    query: Lin,
    #[module(rename = "self")]
    self_: Lin,
}

#[derive(Module)]
struct Block {
    attention: Attention,
    #[module(rename = "LayerNorm")]
    norm: Norm,
    dropout: Dropout,
}

#[derive(Module)]
struct Model {
    layer: Vec<Block>,
    head: Lin,
    #[module(skip)]
    config: Config,
    hidden: usize,
}

fn block(d: usize) -> Block {
    Block {
        attention: Attention { query: Lin::new(d, d, true), self_: Lin::new(d, d, false) },
        norm: Norm::new(d),
        dropout: Dropout::with_seed(0.5, 1).unwrap(),
    }
}

fn model() -> Model {
    Model { layer: vec![block(3), block(3)], head: Lin::new(3, 2, true), config: Config { name: "toy" }, hidden: 3 }
}

fn names(v: &[(String, Tensor)]) -> Vec<&str> {
    v.iter().map(|(n, _)| n.as_str()).collect()
}

const PARAMS: [&str; 12] = [
    "layer.0.attention.query.weight",
    "layer.0.attention.query.bias",
    "layer.0.attention.self.weight",
    "layer.0.LayerNorm.weight",
    "layer.0.LayerNorm.bias",
    "layer.1.attention.query.weight",
    "layer.1.attention.query.bias",
    "layer.1.attention.self.weight",
    "layer.1.LayerNorm.weight",
    "layer.1.LayerNorm.bias",
    "head.weight",
    "head.bias",
];

fn param_names() -> Vec<&'static str> {
    PARAMS.to_vec()
}

#[test]
fn names_follow_fields_indices_and_renames_in_order() {
    let m = model();
    assert_eq!(names(&m.named_parameters()), param_names());
    assert_eq!(
        names(&m.named_buffers()),
        [
            "layer.0.LayerNorm.running_mean",
            "layer.0.LayerNorm.num_batches",
            "layer.1.LayerNorm.running_mean",
            "layer.1.LayerNorm.num_batches"
        ]
    );
    // parameters() are the model's own tensors, not copies.
    assert!(m.parameters()[0].same(&m.layer[0].attention.query.weight));
    assert!(m.parameters().last().unwrap().same(m.head.bias.as_ref().unwrap()));
    // The visitor sees parameters and buffers interleaved in field order, with their kinds.
    let mut seen = Vec::new();
    m.visit("model", &mut |n, _, k| seen.push((n.to_string(), k)));
    assert_eq!(seen[3], ("model.layer.0.LayerNorm.weight".to_string(), TensorKind::Parameter));
    assert_eq!(seen[5], ("model.layer.0.LayerNorm.running_mean".to_string(), TensorKind::Buffer));
    assert_eq!(seen[6], ("model.layer.0.LayerNorm.num_batches".to_string(), TensorKind::Buffer));
    assert_eq!(seen.len(), 12 + 4);
    assert_eq!(m.config, Config { name: "toy" });
    assert_eq!(m.hidden, 3);
}

#[test]
fn named_modules_lists_every_struct_depth_first() {
    let m = model();
    let mods: Vec<String> = m.named_modules().into_iter().map(|(n, _)| n).collect();
    let want = [
        "",
        "layer.0",
        "layer.0.attention",
        "layer.0.attention.query",
        "layer.0.attention.self",
        "layer.0.LayerNorm",
        "layer.0.dropout",
        "layer.1",
        "layer.1.attention",
        "layer.1.attention.query",
        "layer.1.attention.self",
        "layer.1.LayerNorm",
        "layer.1.dropout",
        "head",
    ];
    assert_eq!(mods, want);
    // Each entry is the submodule itself: its parameters are named relative to it.
    let (_, attn) = &m.named_modules()[2];
    assert_eq!(names(&attn.named_parameters()), ["query.weight", "query.bias", "self.weight"]);
}

#[test]
fn freeze_and_unfreeze_by_glob() {
    let m = model();
    let all = m.num_parameters();
    // 2 blocks × (9 + 3 + 9 + 3 + 3) + 6 + 2
    assert_eq!(all.total, 2 * 27 + 8);
    assert_eq!(all.trainable, all.total);

    assert_eq!(m.freeze("layer.0.*").unwrap(), 5);
    assert!(!m.layer[0].attention.self_.weight.requires_grad());
    assert!(!m.layer[0].norm.bias.requires_grad());
    assert!(m.layer[1].attention.self_.weight.requires_grad());
    assert_eq!(m.num_parameters().trainable, all.total - 27);

    assert_eq!(m.freeze("*.bias").unwrap(), 5);
    assert_eq!(m.num_parameters().trainable, all.total - 27 - 3 - 3 - 2);
    // Buffers are never matched.
    assert_eq!(m.freeze("*running_mean").unwrap(), 0);
    assert_eq!(m.freeze("nothing.here").unwrap(), 0);

    assert_eq!(m.unfreeze("*").unwrap(), 12);
    assert_eq!(m.num_parameters(), all);
    assert_eq!(m.freeze("layer.?.attention.*.weight").unwrap(), 4);
    assert_eq!(m.num_parameters().trainable, all.total - 4 * 9);
    assert_eq!(m.num_parameters().total, all.total);
}

#[test]
fn a_frozen_parameter_gets_no_gradient() {
    let m = model();
    m.freeze("layer.0.*").unwrap();
    let x = Tensor::full(&[3], 2.0);
    // A loss that uses both blocks' query weights.
    let w0 = &m.layer[0].attention.query.weight;
    let w1 = &m.layer[1].attention.query.weight;
    let loss = (&(w0 * &x).sum_all() + &(w1 * &x).sum_all()).sum_all();
    loss.backward().unwrap();
    assert!(w0.grad().is_none());
    assert_eq!(w1.grad().unwrap().to_vec_f32().unwrap(), vec![2.0; 9]);
    // With everything used frozen, nothing is recorded at all.
    m.freeze("*").unwrap();
    let y = (w1 * &x).sum_all();
    assert!(!y.requires_grad() && y.is_leaf());
    m.zero_grad();
    assert!(w1.grad().is_none());
}

#[test]
fn train_and_eval_reach_every_flag() {
    let mut m = model();
    assert!(m.is_training());
    assert!(m.layer[1].dropout.is_training());
    m.eval();
    assert!(!m.is_training());
    assert!(!m.layer[0].norm.training && !m.layer[1].norm.training);
    assert!(!m.layer[0].dropout.is_training() && !m.layer[1].dropout.is_training());
    // Dropout in eval is the identity.
    let x = Tensor::full(&[4], 3.0);
    assert!(m.layer[0].dropout.forward(&x).unwrap().same(&x));
    m.train();
    assert!(m.layer[0].norm.training && m.layer[1].dropout.is_training() && m.is_training());
    // A module with no flag inside reports training, like a fresh PyTorch module.
    let mut lin = Lin::new(2, 2, true);
    lin.eval();
    assert_eq!(lin.training_mode(), None);
    assert!(lin.is_training());
}

fn values(sd: &BTreeMap<String, Array>, name: &str) -> Vec<f32> {
    sd[name].to_vec_f32().unwrap()
}

#[test]
fn state_dict_round_trip() {
    let a = model();
    let sd = a.state_dict();
    let mut want: Vec<&str> = param_names();
    want.extend(["layer.0.LayerNorm.running_mean", "layer.0.LayerNorm.num_batches"]);
    want.extend(["layer.1.LayerNorm.running_mean", "layer.1.LayerNorm.num_batches"]);
    want.sort();
    assert_eq!(sd.keys().map(String::as_str).collect::<Vec<_>>(), want);
    assert_eq!(values(&sd, "head.bias"), vec![0.1, 0.1]);

    // Change every tensor of a second model, load the first one's state into it.
    let b = model();
    b.visit("", &mut |_, t, _| {
        let z = t.data().zeros_like().to_dtype(t.dtype()).unwrap();
        t.set_data(z).unwrap();
    });
    assert_eq!(b.head.weight.to_vec_f32().unwrap(), vec![0.0; 6]);
    let report = b.load_state_dict(&sd, true).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(b.head.weight.to_vec_f32().unwrap(), vec![0.5; 6]);
    assert_eq!(b.layer[1].norm.weight.to_vec_f32().unwrap(), vec![1.0; 3]);
    // The dtype of each tensor is kept.
    assert_eq!(b.layer[0].norm.num_batches.as_ref().unwrap().dtype(), kiln_autograd::DType::I64);
    // requires_grad survives loading.
    assert!(b.head.weight.requires_grad());

    // The state dict is a snapshot: changing the model later does not change it.
    a.head.bias.as_ref().unwrap().update_data(|d| d.make_mut_f32().unwrap().fill(7.0));
    assert_eq!(values(&sd, "head.bias"), vec![0.1, 0.1]);
    assert_eq!(values(&a.state_dict(), "head.bias"), vec![7.0, 7.0]);
}

#[test]
fn load_state_dict_reports_missing_unexpected_and_mismatched() {
    let m = model();
    let mut sd = m.state_dict();
    for (_, v) in sd.iter_mut() {
        *v = v.to_dtype(kiln_autograd::DType::F32).unwrap().mul_scalar(2.0).unwrap();
    }
    sd.remove("head.bias");
    sd.remove("layer.1.LayerNorm.running_mean");
    sd.insert("head.extra".into(), Array::zeros(&[1]));
    sd.insert("layer.0.attention.query.weight".into(), Array::zeros(&[3, 4]));

    // Strict: an error naming everything, and nothing loaded.
    let err = m.load_state_dict(&sd, true).unwrap_err().to_string();
    for part in [
        "head.bias",
        "layer.1.LayerNorm.running_mean",
        "head.extra",
        "layer.0.attention.query.weight",
        "[3, 3]",
        "[3, 4]",
    ] {
        assert!(err.contains(part), "{part} not in {err}");
    }
    assert_eq!(m.head.weight.to_vec_f32().unwrap(), vec![0.5; 6]);

    // Not strict: everything that fits is loaded, the rest reported.
    let r = m.load_state_dict(&sd, false).unwrap();
    assert_eq!(r.missing, ["layer.1.LayerNorm.running_mean", "head.bias"]);
    assert_eq!(r.unexpected, ["head.extra"]);
    assert_eq!(r.mismatched.len(), 1);
    assert_eq!(r.mismatched[0].name, "layer.0.attention.query.weight");
    assert_eq!(r.mismatched[0].expected, [3, 3]);
    assert_eq!(r.mismatched[0].found, [3, 4]);
    assert!(!r.is_clean());
    assert_eq!(m.head.weight.to_vec_f32().unwrap(), vec![1.0; 6]);
    assert_eq!(m.head.bias.as_ref().unwrap().to_vec_f32().unwrap(), vec![0.1; 2]);
    assert_eq!(m.layer[0].attention.query.weight.to_vec_f32().unwrap(), vec![0.5; 9]);
    assert_eq!(m.layer[1].attention.query.bias.as_ref().unwrap().to_vec_f32().unwrap(), vec![0.2; 3]);
    // An i64 buffer loaded from f32 values is converted back to i64.
    let nb = m.layer[0].norm.num_batches.as_ref().unwrap();
    assert_eq!(nb.dtype(), kiln_autograd::DType::I64);
}

#[test]
fn visit_mut_can_replace_tensors() {
    let mut m = Lin::new(2, 3, true);
    m.visit_mut("", &mut |n, t, _| {
        if n == "weight" {
            *t = Tensor::ones(&[5, 2]).requires_grad_(true);
        }
    });
    assert_eq!(m.weight.shape(), &[5, 2]);
    assert_eq!(m.num_parameters().total, 13);
}

// ------------------------------------------------------------------ generics, tuples, containers

#[derive(Module)]
struct Pair<A, B: Module> {
    first: A,
    #[module(buffer)]
    second: B,
    #[module(skip)]
    tag: std::marker::PhantomData<fn() -> A>,
}

#[derive(Module)]
struct Seq(Lin, Option<Lin>, Vec<Tensor>);

#[derive(Module)]
struct Wrapper {
    #[module(flatten)]
    inner: Lin,
    heads: [Tensor; 2],
    table: BTreeMap<String, Lin>,
    boxed: Box<dyn Module>,
}

#[derive(Module)]
struct Empty;

#[test]
fn generic_tuple_and_container_fields() {
    let p = Pair { first: Lin::new(1, 1, true), second: Lin::new(1, 2, false), tag: std::marker::PhantomData };
    assert_eq!(names(&p.named_parameters()), ["first.weight", "first.bias"]);
    assert_eq!(names(&p.named_buffers()), ["second.weight"]);

    let s = Seq(Lin::new(1, 1, false), None, vec![param(&[1], 0.0), param(&[2], 0.0)]);
    assert_eq!(names(&s.named_parameters()), ["0.weight", "2.0", "2.1"]);

    let mut table = BTreeMap::new();
    table.insert("b".to_string(), Lin::new(1, 1, false));
    table.insert("a".to_string(), Lin::new(1, 1, false));
    let w = Wrapper {
        inner: Lin::new(1, 1, true),
        heads: [param(&[1], 0.0), param(&[1], 0.0)],
        table,
        boxed: Box::new(Lin::new(1, 1, false)),
    };
    assert_eq!(
        names(&w.named_parameters()),
        ["weight", "bias", "heads.0", "heads.1", "table.a.weight", "table.b.weight", "boxed.weight"]
    );
    assert!(Empty.named_parameters().is_empty());
    assert_eq!(Empty.named_modules().len(), 1);
}

#[test]
fn dyn_module_works() {
    let models: Vec<Box<dyn Module>> = vec![Box::new(Lin::new(2, 2, true)), Box::new(model())];
    let counts: Vec<usize> = models.iter().map(|m| m.num_parameters().total).collect();
    assert_eq!(counts, [6, 62]);
    let m: &dyn Module = &*models[1];
    assert_eq!(m.freeze("head.*").unwrap(), 2);
    assert_eq!(m.state_dict().len(), 16);
}
