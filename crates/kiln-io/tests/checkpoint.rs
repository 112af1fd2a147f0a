//! Checkpoint files: the layout round-trips, interrupted saves leave the previous checkpoint
//! intact, and files that are not checkpoints are refused with the file named.

mod common;
use common::FailAfter;
use kiln_autograd::random::{Generator, GeneratorState};
use kiln_io::{
    load_checkpoint, read_safetensors, save_checkpoint, save_safetensors, temp_path, write_atomically,
    write_checkpoint, Checkpoint,
};
use kiln_optim::SchedulerState;
use kiln_tensor::{Array, DType};
use rand::RngCore;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn dir(test: &str) -> PathBuf {
    common::fresh_dir(&format!("ckpt-{test}"))
}

fn gen_state(seed: u64, draws: usize) -> GeneratorState {
    let mut g = Generator::new(seed);
    for _ in 0..draws {
        g.next_u32();
    }
    g.state()
}

fn sample(step: u64) -> Checkpoint {
    let mut c = Checkpoint {
        step,
        epoch: 2,
        rng: Some(gen_state(1, 37)),
        scheduler: Some(SchedulerState { last_step: 41, base_lrs: vec![0.1, 3e-4] }),
        ..Checkpoint::default()
    };
    c.model.insert("fc.weight".into(), Array::from_vec(vec![step as f32, 0.5, -0.25], &[3]).unwrap());
    c.model.insert("bn.num_batches_tracked".into(), Array::from_vec(vec![step as i64], &[]).unwrap());
    let mut o = BTreeMap::new();
    o.insert("fc.weight.exp_avg".to_string(), Array::from_vec(vec![1e-3f32, 2e-3, 3e-3], &[3]).unwrap());
    o.insert("fc.weight.step".to_string(), Array::from_vec(vec![step as i64], &[]).unwrap());
    o.insert("param_groups.0.lr".to_string(), Array::scalar(0.05));
    c.optimizer = Some(o);
    c.generators.insert("dropout.own".into(), gen_state(9, 3));
    c.extra.insert("run".into(), "exp-7 \"quoted\"".into());
    c
}

fn check_is(c: &Checkpoint, step: u64) {
    assert_eq!((c.step, c.epoch), (step, 2));
    assert_eq!(c.model["fc.weight"].to_vec_f32().unwrap(), vec![step as f32, 0.5, -0.25]);
    assert_eq!(c.model["bn.num_batches_tracked"].to_vec::<i64>().unwrap(), vec![step as i64]);
    let o = c.optimizer.as_ref().unwrap();
    assert_eq!(o.len(), 3);
    assert_eq!(o["fc.weight.step"].dtype(), DType::I64);
    assert_eq!(o["param_groups.0.lr"].item().unwrap(), 0.05);
    assert_eq!(c.scheduler, Some(SchedulerState { last_step: 41, base_lrs: vec![0.1, 3e-4] }));
    assert_eq!(c.rng, Some(gen_state(1, 37)));
    assert_eq!(c.generators["dropout.own"], gen_state(9, 3));
    assert_eq!(c.extra["run"], "exp-7 \"quoted\"");
}

#[test]
fn every_part_round_trips_in_one_safetensors_file() {
    let d = dir("roundtrip");
    let path = d.join("ckpt.safetensors");
    save_checkpoint(&path, &sample(12)).unwrap();
    check_is(&load_checkpoint(&path).unwrap(), 12);

    // The file is plain safetensors with the documented names and metadata.
    let raw = read_safetensors(&path).unwrap();
    let names: Vec<&str> = raw.tensors.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "model.bn.num_batches_tracked",
            "model.fc.weight",
            "optimizer.fc.weight.exp_avg",
            "optimizer.fc.weight.step",
            "optimizer.param_groups.0.lr",
            "scheduler.base_lrs"
        ]
    );
    let m = &raw.metadata;
    assert_eq!(m["kind"], "kiln.checkpoint");
    assert_eq!(m["version"], "1");
    assert_eq!(m["step"], "12");
    assert_eq!(m["epoch"], "2");
    assert_eq!(m["scheduler"], r#"{"last_step":41}"#);
    assert_eq!(m["rng"].len(), 2 * GeneratorState::BYTES);

    // A restored generator state continues the original stream.
    let mut original = Generator::new(1);
    for _ in 0..37 {
        original.next_u32();
    }
    let mut restored = Generator::from_state(&load_checkpoint(&path).unwrap().rng.unwrap());
    assert_eq!(original.next_u64(), restored.next_u64());

    // Optional parts stay absent.
    let bare = Checkpoint { step: 1, ..Checkpoint::default() };
    save_checkpoint(&path, &bare).unwrap();
    let back = load_checkpoint(&path).unwrap();
    assert!(back.optimizer.is_none() && back.scheduler.is_none() && back.rng.is_none() && back.model.is_empty());
}

#[test]
fn an_interrupted_save_leaves_the_previous_checkpoint_loadable_and_intact() {
    let d = dir("interrupted");
    let path = d.join("ckpt.safetensors");
    save_checkpoint(&path, &sample(100)).unwrap();
    let before = std::fs::read(&path).unwrap();

    // The next save dies part-way: in the length, the header, the data.
    for cut in [3, 40, before.len() - 10] {
        let e = write_atomically(&path, |w| {
            write_checkpoint(&mut FailAfter { inner: w, left: cut }, "ckpt.safetensors", &sample(200))
        })
        .unwrap_err();
        assert!(e.to_string().contains("injected failure mid-save"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        check_is(&load_checkpoint(&path).unwrap(), 100);
    }

    // A process killed mid-save leaves a truncated temporary file behind: the checkpoint
    // still loads, a truncated checkpoint is refused, and the next save goes through.
    let mut partial = Vec::new();
    write_checkpoint(&mut partial, "x", &sample(200)).unwrap();
    partial.truncate(partial.len() - 5);
    std::fs::write(temp_path(&path), &partial).unwrap();
    check_is(&load_checkpoint(&path).unwrap(), 100);
    let e = load_checkpoint(temp_path(&path)).unwrap_err().to_string();
    assert!(e.contains("ckpt.safetensors.tmp") && e.contains("run past the end"), "{e}");
    save_checkpoint(&path, &sample(200)).unwrap();
    check_is(&load_checkpoint(&path).unwrap(), 200);
    assert!(!temp_path(&path).exists());
}

#[test]
fn files_that_are_not_checkpoints_are_refused() {
    let d = dir("refused");
    let path = d.join("weights.safetensors");
    let a = Array::scalar(1.0);
    save_safetensors(&path, [("w", &a)], None).unwrap();
    let e = load_checkpoint(&path).unwrap_err().to_string();
    assert!(e.contains("weights.safetensors") && e.contains("not a kiln checkpoint"), "{e}");

    let meta = |pairs: &[(&str, &str)]| -> Option<BTreeMap<String, String>> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    };
    let base = [("kind", "kiln.checkpoint"), ("version", "1"), ("step", "3"), ("epoch", "0")];
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<(&'a str, &'a Array)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("kind", "kiln.checkpoint"), ("version", "2"), ("step", "3"), ("epoch", "0")],
            vec![],
            "version 2 is newer",
        ),
        (
            vec![("kind", "kiln.checkpoint"), ("version", "1"), ("step", "-3"), ("epoch", "0")],
            vec![],
            "bad step counter",
        ),
        ([&base[..], &[("rng", "zz")]].concat(), vec![], "rng: not a hex string"),
        ([&base[..], &[("rng", "00ff")]].concat(), vec![], "56 bytes, got 2"),
        ([&base[..], &[("scheduler", r#"{"last_step":1}"#)]].concat(), vec![], "must come together"),
        ([&base[..], &[("generators", "[1]")]].concat(), vec![], "generators metadata is not a JSON object"),
        (base.to_vec(), vec![("w", &a)], "unexpected tensor \"w\""),
    ];
    for (m, tensors, want) in cases {
        save_safetensors(&path, tensors, meta(&m)).unwrap();
        let e = load_checkpoint(&path).unwrap_err().to_string();
        assert!(e.contains("weights.safetensors") && e.contains(want), "want {want:?}: {e}");
    }
}
