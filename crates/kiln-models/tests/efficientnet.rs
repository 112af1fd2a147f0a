//! EfficientNet-Lite0 against PyTorch's reference outputs (one image of
//! `efficientnet-lite0/reference.safetensors`, from `KILN_ASSETS_DIR` or a `shared/assets`
//! folder next to the repository; skipped with a note when absent), plus the architecture's
//! names, shapes and "SAME" padding at other input sizes, training mode and head replacement.

use kiln_autograd::{no_grad, Tensor};
use kiln_models::efficientnet::{same_padding, EfficientNet, FEATURES};
use kiln_nn::{init, Forward, Module};
use std::path::PathBuf;

/// The shared assets folder: `$KILN_ASSETS_DIR`, else the first `shared/assets` found in a
/// folder above the repository.
fn assets() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("KILN_ASSETS_DIR") {
        return Some(PathBuf::from(d));
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    repo.ancestors().skip(1).take(3).map(|d| d.join("shared/assets")).find(|d| d.is_dir())
}

fn max_abs_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

#[test]
fn pretrained_lite0_matches_pytorch_reference() {
    let Some(dir) = assets().map(|a| a.join("efficientnet-lite0")).filter(|d| d.join("model.safetensors").is_file())
    else {
        eprintln!("note: efficientnet-lite0 assets not found (set KILN_ASSETS_DIR); skipping the reference check");
        return;
    };
    let model = EfficientNet::from_pretrained(&dir).unwrap();
    assert!(!model.is_training());
    assert_eq!(model.num_classes(), 1000);
    assert_eq!(model.num_parameters().total, 4_652_008);
    let r = kiln_io::load_safetensors(dir.join("reference.safetensors")).unwrap();
    // One image keeps the test fast in the debug profile.
    let i = 1;
    let x = Tensor::from_array(r["input"].narrow(0, i, 1).unwrap());
    let (features, logits) = no_grad(|| {
        let f = model.features(&x).unwrap();
        let l = model.fc.forward(&f).unwrap();
        (f, l)
    });
    assert_eq!(features.shape(), &[1, FEATURES]);
    assert_eq!(logits.shape(), &[1, 1000]);
    let want_f = r["pooled_features"].narrow(0, i, 1).unwrap().to_vec_f32().unwrap();
    let want_l = r["logits"].narrow(0, i, 1).unwrap().to_vec_f32().unwrap();
    let (ef, el) =
        (max_abs_err(&features.to_vec_f32().unwrap(), &want_f), max_abs_err(&logits.to_vec_f32().unwrap(), &want_l));
    assert!(ef < 1e-4, "pooled features: max abs error {ef}");
    assert!(el < 1e-4, "logits: max abs error {el}");
    // The full forward (dropout is off in evaluation mode) gives the same logits.
    let full = no_grad(|| model.forward(&x)).unwrap().to_vec_f32().unwrap();
    assert!(max_abs_err(&full, &want_l) < 1e-4);
}

#[test]
fn names_match_the_pytorch_checkpoint_layout() {
    let model = EfficientNet::lite0(1000).unwrap();
    let state = model.state_dict();
    // 296 tensors: 49 BatchNorms of 5 tensors, 49 convs, the classifier's 2.
    assert_eq!(state.len(), 296);
    let shape = |k: &str| state.get(k).unwrap_or_else(|| panic!("missing {k}")).shape().to_vec();
    assert_eq!(shape("_conv_stem.weight"), [32, 3, 3, 3]);
    assert_eq!(shape("_bn0.running_var"), [32]);
    assert_eq!(shape("_bn0.num_batches_tracked"), Vec::<usize>::new());
    assert!(!state.contains_key("_blocks.0._expand_conv.weight"));
    assert_eq!(shape("_blocks.0._depthwise_conv.weight"), [32, 1, 3, 3]);
    assert_eq!(shape("_blocks.0._project_conv.weight"), [16, 32, 1, 1]);
    assert_eq!(shape("_blocks.1._expand_conv.weight"), [96, 16, 1, 1]);
    assert_eq!(shape("_blocks.3._depthwise_conv.weight"), [144, 1, 5, 5]);
    assert_eq!(shape("_blocks.15._project_conv.weight"), [320, 1152, 1, 1]);
    assert_eq!(shape("_blocks.15._bn2.bias"), [320]);
    assert_eq!(shape("_conv_head.weight"), [1280, 320, 1, 1]);
    assert_eq!(shape("_bn1.weight"), [1280]);
    assert_eq!(shape("_fc.weight"), [1000, 1280]);
    assert_eq!(shape("_fc.bias"), [1000]);
    assert_eq!(model.num_parameters().total, 4_652_008);
    let residual: Vec<usize> = (0..16).filter(|&i| model.blocks[i].has_residual()).collect();
    assert_eq!(residual, [2, 4, 6, 7, 9, 10, 12, 13, 14]);
    // A state dict of another model loads strictly.
    let other = EfficientNet::lite0_seeded(1000, 7).unwrap();
    other.load_state_dict(&state, true).unwrap();
}

#[test]
fn same_padding_follows_tensorflow() {
    // out = ceil(in / s); the odd zero goes after.
    for input in 1..40 {
        for (k, s) in [(1, 1), (3, 1), (3, 2), (5, 1), (5, 2)] {
            let (b, a) = same_padding(input, k, s, 1);
            assert!(a == b || a == b + 1, "in {input} k {k} s {s}: ({b}, {a})");
            assert_eq!((input + b + a - k) / s + 1, input.div_ceil(s), "in {input} k {k} s {s}");
        }
    }
    assert_eq!(same_padding(224, 3, 2, 1), (0, 1));
    assert_eq!(same_padding(224, 3, 1, 1), (1, 1));
    assert_eq!(same_padding(28, 5, 2, 1), (1, 2));
    assert_eq!(same_padding(7, 5, 2, 1), (2, 2));
}

#[test]
fn any_input_size_gives_ceil_div_32_maps() {
    let mut model = EfficientNet::lite0(10).unwrap();
    model.eval();
    // 112 -> 56, 28, 14, 7, 4 (the 7x7 map of block 11 must give ceil(7/2) = 4, not 3).
    for (h, w, oh, ow) in [(112, 112, 4, 4), (33, 50, 2, 2), (1, 1, 1, 1)] {
        let x = Tensor::from_array(init::uniform(&[2, 3, h, w], -1.0, 1.0, &mut init::rng(1)));
        let maps = no_grad(|| model.feature_maps(&x)).unwrap();
        assert_eq!(maps.shape(), &[2, FEATURES, oh, ow], "input {h}x{w}");
        assert_eq!(no_grad(|| model.forward(&x)).unwrap().shape(), &[2, 10]);
    }
    let err = model.forward(&Tensor::zeros(&[1, 1, 8, 8])).unwrap_err().to_string();
    assert!(err.contains("EfficientNet") && err.contains("[1, 1, 8, 8]"), "{err}");
}

#[test]
fn training_mode_updates_statistics_and_backpropagates() {
    let mut model = EfficientNet::lite0_seeded(5, 3).unwrap();
    model.reset_classifier(3, &mut init::rng(2)).unwrap();
    assert_eq!(model.fc.weight.shape(), &[3, FEATURES]);
    model.train();
    let x = Tensor::from_array(init::uniform(&[2, 3, 32, 32], -1.0, 1.0, &mut init::rng(4)));
    let before = model.bn0.running_mean.as_ref().unwrap().to_vec_f32().unwrap();
    let loss = model.forward(&x).unwrap().sum_all();
    loss.backward().unwrap();
    let after = model.bn0.running_mean.as_ref().unwrap().to_vec_f32().unwrap();
    assert_ne!(before, after, "training mode updates the running statistics");
    for (name, p) in model.named_parameters() {
        assert!(p.grad().is_some(), "{name} got no gradient");
    }
    // Transfer learning: everything frozen but the new head, in evaluation mode (BatchNorm
    // folded into the convolutions): only the head gets gradients.
    model.eval();
    model.zero_grad();
    model.freeze("*").unwrap();
    model.unfreeze("_fc.*").unwrap();
    model.forward(&x).unwrap().sum_all().backward().unwrap();
    assert!(model.fc.weight.grad().is_some());
    assert!(model.conv_stem.weight.grad().is_none());
    assert!(model.set_classifier(kiln_nn::Linear::new(10, 2, true, &mut init::rng(0))).is_err());
}
