//! Gradient checkpointing of BERT layers and GPT blocks: the same gradients for every
//! parameter as without it (in training mode, dropout drawing the same masks), and fewer
//! recorded nodes alive after the forward pass.
//!
//! The node count and the default generator are process-wide: each test holds `LOCK`.

use kiln_autograd::{live_nodes, no_grad, random, Tensor};
use kiln_models::{BertConfig, BertModel, Gpt, GptConfig};
use kiln_nn::Module;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

static LOCK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn tiny_bert() -> BertConfig {
    BertConfig {
        vocab_size: 13,
        hidden_size: 8,
        num_hidden_layers: 3,
        num_attention_heads: 2,
        intermediate_size: 16,
        max_position_embeddings: 8,
        hidden_dropout_prob: 0.2,
        attention_probs_dropout_prob: 0.2,
        ..BertConfig::default()
    }
}

type Grads = BTreeMap<String, Vec<f32>>;

fn grads(m: &dyn Module) -> Grads {
    m.named_parameters()
        .into_iter()
        .map(|(n, t)| {
            let g = t.grad().unwrap_or_else(|| panic!("{n} has no gradient"));
            (n, g.to_vec_f32().unwrap())
        })
        .collect()
}

/// Equal to 1e-6 of each tensor's largest gradient (in practice bit for bit: the recomputed
/// graph is the plain one).
fn assert_same_grads(a: &Grads, b: &Grads) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (n, ga) in a {
        let gb = &b[n];
        let scale = ga.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
        for (x, y) in ga.iter().zip(gb) {
            assert!((x - y).abs() <= 1e-6 * scale, "{n}: {ga:?} vs {gb:?}");
        }
    }
}

/// Token ids `[2, 6]` with the last two positions of the second sequence padded.
fn bert_batch() -> (Tensor, Tensor) {
    let ids = Tensor::from_vec_i64(vec![2, 7, 4, 9, 1, 3, 5, 8, 12, 6, 0, 0], &[2, 6]).unwrap();
    let mask = Tensor::from_vec_i64(vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0], &[2, 6]).unwrap();
    (ids, mask)
}

/// One forward and backward pass of `sum((h·c)²) + sum(pooler)` after seeding the default
/// generator; returns the loss, every parameter's gradient and the nodes alive after the
/// forward pass.
fn bert_step(m: &BertModel, seed: u64) -> (f32, Grads, usize) {
    m.zero_grad();
    let (ids, mask) = bert_batch();
    random::manual_seed(seed);
    let before = live_nodes();
    let out = m.forward(&ids, Some(&mask), None).unwrap();
    let nodes = live_nodes() - before;
    let h = &out.last_hidden_state;
    let c = Tensor::from_array(kiln_autograd::gradcheck::uniform(h.shape(), 0.5, 1.5, 7));
    let hc = h.try_mul(&c).unwrap();
    let loss = hc.try_mul(&hc).unwrap().sum_all().try_add(&out.pooler_output.unwrap().sum_all()).unwrap();
    loss.backward().unwrap();
    (loss.item().unwrap(), grads(m), nodes)
}

#[test]
fn bert_gradients_are_unchanged_and_fewer_nodes_are_kept() {
    let _g = serial();
    let mut m = BertModel::new(&tiny_bert(), true, &mut kiln_nn::init::rng(3)).unwrap();
    assert!(m.is_training() && !m.is_gradient_checkpointing());
    let (plain_loss, plain, plain_nodes) = bert_step(&m, 11);
    m.set_gradient_checkpointing(true);
    assert!(m.is_gradient_checkpointing());
    let (ckpt_loss, ckpt, ckpt_nodes) = bert_step(&m, 11);
    assert_eq!(plain_loss, ckpt_loss);
    assert_same_grads(&plain, &ckpt);
    // Each layer's dozens of nodes become one.
    let layers = tiny_bert().num_hidden_layers;
    assert!(plain_nodes >= ckpt_nodes + layers * 20, "plain {plain_nodes}, checkpointed {ckpt_nodes}");
    // Dropout is really active: another seed gives other gradients.
    let (_, other, _) = bert_step(&m, 12);
    assert_ne!(
        other["encoder.layer.0.attention.self.query.weight"],
        ckpt["encoder.layer.0.attention.self.query.weight"]
    );
    // Every graph was freed.
    assert_eq!(live_nodes(), 0);
}

#[test]
fn bert_in_eval_mode_and_under_no_grad() {
    let _g = serial();
    let mut m = BertModel::new(&tiny_bert(), false, &mut kiln_nn::init::rng(4)).unwrap();
    m.eval();
    let (ids, mask) = bert_batch();
    let plain = no_grad(|| m.forward(&ids, Some(&mask), None)).unwrap().last_hidden_state;
    m.set_gradient_checkpointing(true);
    let out = no_grad(|| m.forward(&ids, Some(&mask), None)).unwrap().last_hidden_state;
    assert!(out.is_leaf() && live_nodes() == 0);
    assert_eq!(plain.to_vec_f32().unwrap(), out.to_vec_f32().unwrap());
    // Eval mode with grad: checkpointed, same gradients.
    m.zero_grad();
    m.forward(&ids, Some(&mask), None).unwrap().last_hidden_state.sum_all().backward().unwrap();
    let ckpt = grads(&m);
    m.set_gradient_checkpointing(false);
    m.zero_grad();
    m.forward(&ids, Some(&mask), None).unwrap().last_hidden_state.sum_all().backward().unwrap();
    assert_same_grads(&grads(&m), &ckpt);
}

fn tiny_gpt() -> GptConfig {
    GptConfig {
        vocab_size: 17,
        n_positions: 8,
        n_embd: 8,
        n_layer: 2,
        n_head: 2,
        resid_pdrop: 0.2,
        embd_pdrop: 0.2,
        attn_pdrop: 0.2,
        ..GptConfig::default()
    }
}

/// Two training steps' gradients (GPT's dropout layers own their generators, so the second
/// step checks that checkpointing left them where the plain forward pass would have).
fn gpt_steps(checkpointing: bool) -> (Vec<Grads>, usize) {
    let mut m = Gpt::new(tiny_gpt(), 5).unwrap();
    m.set_gradient_checkpointing(checkpointing);
    let ids = Tensor::from_vec_i64(vec![1, 4, 9, 16, 2, 3, 5, 7, 11, 13], &[2, 5]).unwrap();
    let targets = Tensor::from_vec_i64(vec![4, 9, 16, 2, 3, 5, 7, 11, 13, -100], &[2, 5]).unwrap();
    let mut out = Vec::new();
    let mut nodes = 0;
    for _ in 0..2 {
        m.zero_grad();
        let before = live_nodes();
        let loss = m.loss(&ids, &targets).unwrap();
        nodes = live_nodes() - before;
        loss.backward().unwrap();
        out.push(grads(&m));
    }
    (out, nodes)
}

#[test]
fn gpt_gradients_are_unchanged_and_fewer_nodes_are_kept() {
    let _g = serial();
    let (plain, plain_nodes) = gpt_steps(false);
    let (ckpt, ckpt_nodes) = gpt_steps(true);
    for (p, c) in plain.iter().zip(&ckpt) {
        assert_same_grads(p, c);
    }
    // Different masks at each step: the equality above covers two draws.
    assert_ne!(plain[0]["h.0.attn.c_attn.weight"], plain[1]["h.0.attn.c_attn.weight"]);
    assert!(plain_nodes >= ckpt_nodes + tiny_gpt().n_layer * 15, "plain {plain_nodes}, checkpointed {ckpt_nodes}");
    assert_eq!(live_nodes(), 0);
}

/// LoRA adapters' dropout owns its generator: the recomputation rewinds it, so the adapters'
/// gradients match, over two steps (the generator is left where the plain pass leaves it).
#[test]
fn bert_with_lora_dropout_gradients_are_unchanged() {
    let _g = serial();
    let run = |checkpointing: bool| -> Vec<Grads> {
        let mut m = BertModel::new(&tiny_bert(), true, &mut kiln_nn::init::rng(8)).unwrap();
        let cfg = kiln_nn::lora::LoraConfig::new(2, 4.0).dropout(0.3).seed(1);
        kiln_nn::lora::inject_lora(&mut m, "*.query", &cfg).unwrap();
        m.set_gradient_checkpointing(checkpointing);
        (0..2)
            .map(|_| {
                bert_step_lora(&m);
                kiln_nn::lora::lora_parameters(&m)
                    .into_iter()
                    .map(|(n, t)| (n, t.grad().unwrap().to_vec_f32().unwrap()))
                    .collect()
            })
            .collect()
    };
    let (plain, ckpt) = (run(false), run(true));
    for (p, c) in plain.iter().zip(&ckpt) {
        assert_same_grads(p, c);
    }
    assert_ne!(plain[0], plain[1]);
}

/// A forward and backward pass of `sum(h²)` (the base parameters are frozen).
fn bert_step_lora(m: &BertModel) {
    m.zero_grad();
    let (ids, mask) = bert_batch();
    random::manual_seed(21);
    let out = m.forward(&ids, Some(&mask), None).unwrap();
    let loss = out.last_hidden_state.try_mul(&out.last_hidden_state).unwrap().sum_all();
    loss.backward().unwrap();
}
