//! Module save / load: names, buffers, strict and non-strict loading, key maps and
//! transforms for foreign layouts.

mod common;
use kiln_io::{load_module, load_safetensors, read_safetensors, save_module, save_safetensors, KeyMap, LoadOptions};
use kiln_nn::{init, BatchNorm1d, Linear, Module};
use kiln_tensor::{Array, DType};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn dir(test: &str) -> PathBuf {
    common::fresh_dir(&format!("mod-{test}"))
}

#[derive(Module)]
struct Net {
    fc1: Linear,
    bn: BatchNorm1d,
    fc2: Linear,
}

fn net(seed: u64) -> Net {
    let mut r = init::rng(seed);
    Net { fc1: Linear::new(3, 4, true, &mut r), bn: BatchNorm1d::new(4), fc2: Linear::new(4, 2, false, &mut r) }
}

fn values(m: &dyn Module) -> BTreeMap<String, Vec<f32>> {
    m.state_dict().into_iter().map(|(k, v)| (k, v.to_dtype(DType::F32).unwrap().to_vec_f32().unwrap())).collect()
}

#[test]
fn save_then_load_restores_parameters_and_buffers_under_pytorch_names() {
    let d = dir("roundtrip");
    let path = d.join("net.safetensors");
    let a = net(0);
    a.bn.running_mean
        .as_ref()
        .unwrap()
        .set_data(Array::from_vec(vec![0.5f32, -1.0, 2.0, 0.25], &[4]).unwrap())
        .unwrap();
    a.bn.num_batches_tracked.as_ref().unwrap().set_data(Array::from_vec(vec![17i64], &[]).unwrap()).unwrap();
    save_module(&a, &path).unwrap();

    let file = read_safetensors(&path).unwrap();
    assert_eq!(file.metadata.get("format").map(String::as_str), Some("pt"));
    let names: Vec<&str> = file.tensors.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "bn.bias",
            "bn.num_batches_tracked",
            "bn.running_mean",
            "bn.running_var",
            "bn.weight",
            "fc1.bias",
            "fc1.weight",
            "fc2.weight"
        ]
    );
    assert_eq!(file.tensors["bn.num_batches_tracked"].dtype(), DType::I64);
    assert_eq!(file.tensors["fc1.weight"].shape(), &[4, 3]);

    let mut b = net(1);
    assert_ne!(values(&a), values(&b));
    let report = load_module(&mut b, &path, &LoadOptions::new()).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(values(&a), values(&b));
    assert_eq!(b.bn.num_batches_tracked.as_ref().unwrap().data().to_vec::<i64>().unwrap(), vec![17]);
    // Loaded parameters are still parameters.
    assert!(b.fc1.weight.requires_grad());
}

#[test]
fn strict_loading_names_every_problem_and_loads_nothing() {
    let d = dir("strict");
    let path = d.join("partial.safetensors");
    let w = Array::zeros(&[4, 3]);
    let wrong = Array::zeros(&[2, 5]);
    let extra = Array::zeros(&[1]);
    save_safetensors(&path, [("fc1.weight", &w), ("fc2.weight", &wrong), ("head.bias", &extra)], None).unwrap();

    let mut m = net(0);
    let before = values(&m);
    let e = load_module(&mut m, &path, &LoadOptions::new()).unwrap_err().to_string();
    assert!(e.contains("partial.safetensors"), "{e}");
    assert!(e.contains("missing keys: fc1.bias, bn.weight, bn.bias, bn.running_mean"), "{e}");
    assert!(e.contains("unexpected keys: head.bias"), "{e}");
    assert!(e.contains("fc2.weight (model [2, 4], state dict [2, 5])"), "{e}");
    assert_eq!(values(&m), before, "strict failure loads nothing");

    // Not strict: what matches is loaded, the rest reported.
    let report = load_module(&mut m, &path, &LoadOptions::new().strict(false)).unwrap();
    assert_eq!(report.unexpected, ["head.bias"]);
    assert_eq!(report.mismatched.len(), 1);
    assert_eq!(report.mismatched[0].name, "fc2.weight");
    assert_eq!(report.missing.len(), 6);
    assert_eq!(m.fc1.weight.to_vec_f32().unwrap(), vec![0.0; 12]);
    assert_eq!(m.fc2.weight.to_vec_f32().unwrap(), before["fc2.weight"]);
}

#[test]
fn key_map_and_transpose_load_a_foreign_layout() {
    // A "foreign" checkpoint: prefixed names, layers called `h.<i>.dense`, weights stored
    // `[in, out]`, an extra head to drop.
    let d = dir("foreign");
    let path = d.join("foreign.safetensors");
    let w1_in_out = Array::from_vec((0..12).map(|i| i as f32).collect::<Vec<f32>>(), &[3, 4]).unwrap();
    let b1 = Array::from_vec(vec![0.1f32, 0.2, 0.3, 0.4], &[4]).unwrap();
    let w2_in_out = Array::from_vec((0..8).map(|i| -(i as f32)).collect::<Vec<f32>>(), &[4, 2]).unwrap();
    let head = Array::zeros(&[7, 7]);
    save_safetensors(
        &path,
        [
            ("backbone.h.0.dense.w", &w1_in_out),
            ("backbone.h.0.dense.b", &b1),
            ("backbone.h.1.dense.w", &w2_in_out),
            ("lm_head.w", &head),
        ],
        None,
    )
    .unwrap();

    #[derive(Module)]
    struct Two {
        fc1: Linear,
        fc2: Linear,
    }
    let mut r = init::rng(3);
    let mut m = Two { fc1: Linear::new(3, 4, true, &mut r), fc2: Linear::new(4, 2, false, &mut r) };
    let km = KeyMap::new()
        .map(|n| (!n.starts_with("lm_head.")).then(|| n.to_string()))
        .strip_prefix("backbone.")
        .regex(r"^h\.(\d+)\.dense\.", "fc$1.")
        .unwrap()
        .regex(r"\.w$", ".weight")
        .unwrap()
        .regex(r"\.b$", ".bias")
        .unwrap()
        // Layers are numbered from 1 in the model.
        .map(|n| Some(n.replace("fc1.", "fc2.").replace("fc0.", "fc1.")));
    let opts = LoadOptions::new().key_map(km).transpose("fc?.weight");
    let report = load_module(&mut m, &path, &opts).unwrap();
    assert!(report.is_clean(), "{report}");
    // fc1.weight[o][i] = w1_in_out[i][o] = 4i + o.
    let want: Vec<f32> = (0..4).flat_map(|o| (0..3).map(move |i| (4 * i + o) as f32)).collect();
    assert_eq!(m.fc1.weight.to_vec_f32().unwrap(), want);
    assert_eq!(m.fc1.bias.as_ref().unwrap().to_vec_f32().unwrap(), vec![0.1, 0.2, 0.3, 0.4]);
    let want2: Vec<f32> = (0..2).flat_map(|o| (0..4).map(move |i| -((2 * i + o) as f32))).collect();
    assert_eq!(m.fc2.weight.to_vec_f32().unwrap(), want2);
    assert!(m.fc2.weight.data().is_contiguous());
}

#[test]
fn options_work_on_plain_maps_and_report_collisions() {
    let mut sd = BTreeMap::new();
    sd.insert("a.x".to_string(), Array::scalar(1.0));
    sd.insert("b.x".to_string(), Array::scalar(2.0));
    sd.insert("c".to_string(), Array::from_vec(vec![1.0f32, 2.0], &[2]).unwrap());
    let opts = LoadOptions::new()
        .key_map(KeyMap::new().add_prefix("model."))
        .transform(|name, a| if name == "model.c" { a.reshape(&[2, 1]) } else { Ok(a) })
        .transform(|name, a| if name == "model.c" { a.transpose(0, 1) } else { Ok(a) });
    let out = opts.apply(sd.clone()).unwrap();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["model.a.x", "model.b.x", "model.c"]);
    // Transforms run in order: reshape [2] -> [2, 1], then transpose -> [1, 2].
    assert_eq!(out["model.c"].shape(), &[1, 2]);

    let collide = KeyMap::new().regex(r"^[ab]\.", "").unwrap();
    let e = collide.remap(sd.clone()).unwrap_err().to_string();
    assert!(e.contains("\"a.x\" and \"b.x\" both map to \"x\""), "{e}");
    assert!(KeyMap::new().regex("(", "").unwrap_err().to_string().contains("invalid regex"));

    // A failing transform fails the load with the file named.
    let d = dir("plain");
    let path = d.join("p.safetensors");
    let fc = Linear::new(2, 2, true, &mut init::rng(0));
    save_module(&fc, &path).unwrap();
    let mut fc2 = Linear::new(2, 2, true, &mut init::rng(1));
    let bad = LoadOptions::new().transform(|_, a| a.reshape(&[3]));
    let e = load_module(&mut fc2, &path, &bad).unwrap_err().to_string();
    assert!(e.contains("p.safetensors") && e.contains("reshape"), "{e}");
    assert_eq!(load_safetensors(&path).unwrap().len(), 2);
}

#[test]
fn loading_converts_dtypes_to_the_modules() {
    // An f16 file loads into f32 parameters.
    let d = dir("dtype");
    let path = d.join("half.safetensors");
    let w: Vec<u8> = [0x3c00u16, 0xc000, 0x3800, 0x0000].iter().flat_map(|x| x.to_le_bytes()).collect();
    let views =
        vec![("weight", safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![2, 2], &w).unwrap())];
    std::fs::write(&path, safetensors::serialize(views, &None).unwrap()).unwrap();
    let mut fc = Linear::new(2, 2, false, &mut init::rng(0));
    load_module(&mut fc, &path, &LoadOptions::new()).unwrap();
    assert_eq!(fc.weight.to_vec_f32().unwrap(), vec![1.0, -2.0, 0.5, 0.0]);
}
