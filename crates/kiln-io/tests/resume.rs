//! The resume test: training N steps straight gives parameters bit-identical to training k
//! steps, checkpointing, rebuilding everything from scratch, loading, and training N − k more.
//!
//! The model draws dropout masks from the process-wide default generator, so this file holds
//! one test (its own process): nothing else draws from that generator meanwhile.

use kiln_autograd::ops::loss::{mse_loss, Reduction};
use kiln_autograd::{random, Tensor};
use kiln_io::{load_checkpoint, save_checkpoint, Checkpoint};
use kiln_nn::{init, Dropout, Forward, Linear, Module};
use kiln_optim::{AdamW, LrScheduler, Optimizer, StepLR};
use std::collections::BTreeMap;
use std::path::PathBuf;

const N: usize = 30;
const K: usize = 13;

#[derive(Module)]
struct Net {
    fc1: Linear,
    /// Draws from the default generator.
    drop: Dropout,
    /// Owns its generator (seeded).
    drop_own: Dropout,
    fc2: Linear,
}

impl Net {
    fn forward(&self, x: &Tensor) -> kiln_autograd::Result<Tensor> {
        let h = self.drop.forward(&self.fc1.forward(x)?)?.try_relu()?;
        self.fc2.forward(&self.drop_own.forward(&h)?)
    }
}

/// A model (initialised from `init_seed`), AdamW over its named parameters and a StepLR.
fn build(init_seed: u64) -> (Net, AdamW, StepLR) {
    let mut r = init::rng(init_seed);
    let net = Net {
        fc1: Linear::new(4, 16, true, &mut r),
        drop: Dropout::new(0.3).unwrap(),
        drop_own: Dropout::with_seed(0.2, 77).unwrap(),
        fc2: Linear::new(16, 2, true, &mut r),
    };
    let mut opt = AdamW::new(net.named_parameters(), 1e-2).weight_decay(0.05);
    let sched = StepLR::new(&mut opt, 7, 0.5).unwrap();
    (net, opt, sched)
}

fn data() -> (Tensor, Tensor) {
    let x: Vec<f32> = (0..16 * 4).map(|i| ((i as f32) * 0.37).sin()).collect();
    let y: Vec<f32> = (0..16 * 2).map(|i| ((i as f32) * 0.11).cos()).collect();
    (Tensor::from_vec(x, &[16, 4]).unwrap(), Tensor::from_vec(y, &[16, 2]).unwrap())
}

fn train(net: &Net, opt: &mut AdamW, sched: &mut StepLR, steps: std::ops::Range<usize>) {
    let (x, y) = data();
    for _ in steps {
        opt.zero_grad();
        let loss = mse_loss(&net.forward(&x).unwrap(), &y, Reduction::Mean).unwrap();
        loss.backward().unwrap();
        opt.step().unwrap();
        sched.step(opt);
    }
}

/// Every parameter's and optimizer buffer's bits, and the learning rate's.
fn fingerprint(net: &Net, opt: &AdamW) -> BTreeMap<String, Vec<u32>> {
    let bits = |a: &kiln_autograd::Array| -> Vec<u32> {
        match a.dtype() {
            kiln_autograd::DType::F32 => a.to_vec_f32().unwrap().iter().map(|v| v.to_bits()).collect(),
            _ => a.to_vec::<i64>().unwrap().iter().map(|&v| v as u32).collect(),
        }
    };
    let mut out: BTreeMap<String, Vec<u32>> =
        net.state_dict().iter().map(|(k, v)| (format!("model.{k}"), bits(v))).collect();
    out.extend(opt.state_dict().unwrap().iter().map(|(k, v)| (format!("optimizer.{k}"), bits(v))));
    out.insert("lr".into(), vec![opt.lr().to_bits()]);
    out
}

/// Trains k steps, checkpoints, rebuilds from scratch (other init, scrambled generator),
/// restores and trains the rest. `restore_rng` false leaves the generators as they are.
fn resumed(path: &PathBuf, restore_rng: bool) -> BTreeMap<String, Vec<u32>> {
    random::manual_seed(2024);
    {
        let (net, mut opt, mut sched) = build(0);
        train(&net, &mut opt, &mut sched, 0..K);
        let mut ckpt = Checkpoint::capture(&net, &opt, Some(&sched), K as u64, 0).unwrap();
        ckpt.generators.insert("drop_own".into(), net.drop_own.generator_state().unwrap());
        ckpt.extra.insert("note".into(), "resume test".into());
        save_checkpoint(path, &ckpt).unwrap();
    }
    random::manual_seed(999);
    let (net, mut opt, mut sched) = build(5);
    let mut ckpt = load_checkpoint(path).unwrap();
    assert_eq!((ckpt.step, ckpt.epoch), (K as u64, 0));
    assert_eq!(ckpt.extra["note"], "resume test");
    if !restore_rng {
        ckpt.rng = None;
    }
    ckpt.restore(&net, &mut opt, Some(&mut sched)).unwrap();
    assert_eq!(sched.last_step(), K);
    if restore_rng {
        net.drop_own.set_generator_state(&ckpt.generators["drop_own"]).unwrap();
    }
    train(&net, &mut opt, &mut sched, ckpt.step as usize..N);
    fingerprint(&net, &opt)
}

#[test]
fn resuming_from_a_checkpoint_is_bit_identical_to_training_straight_through() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-io-resume");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ckpt.safetensors");

    random::manual_seed(2024);
    let (net, mut opt, mut sched) = build(0);
    train(&net, &mut opt, &mut sched, 0..N);
    let straight = fingerprint(&net, &opt);
    assert_eq!(sched.last_step(), N);
    // The schedule has decayed four times (steps 7, 14, 21, 28).
    assert_eq!(opt.lr(), (1e-2f32 as f64 * 0.5f64.powi(4)) as f32);
    assert!(straight.keys().any(|k| k.ends_with("exp_avg_sq")));

    let resumed_run = resumed(&path, true);
    assert_eq!(straight.keys().collect::<Vec<_>>(), resumed_run.keys().collect::<Vec<_>>());
    for (k, v) in &straight {
        assert_eq!(v, &resumed_run[k], "{k} differs after resuming");
    }

    // Control: without the generators' states the dropout masks differ, and so do the weights.
    let no_rng = resumed(&path, false);
    assert_ne!(straight["model.fc1.weight"], no_rng["model.fc1.weight"]);
}
