//! LayerNorm, RMSNorm, GroupNorm, BatchNorm1d and BatchNorm2d: PyTorch names, default
//! initialisation, running statistics over several steps against their closed form, evaluation
//! mode, and state-dict round trips.

use kiln_autograd::gradcheck::uniform;
use kiln_autograd::{Array, DType, Tensor};
use kiln_nn::{BatchNorm1d, BatchNorm2d, Forward, GroupNorm, LayerNorm, Module, RMSNorm};

fn names(v: Vec<(String, Tensor)>) -> Vec<String> {
    v.into_iter().map(|(n, _)| n).collect()
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.to_vec_f32().unwrap()
}

fn close(a: &[f32], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!((x as f64 - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: got {x}, expected {y}");
    }
}

/// Per-channel batch mean and unbiased variance of `[N, C, *]` values, in f64.
fn channel_stats(x: &Array) -> (Vec<f64>, Vec<f64>) {
    let sh = x.shape();
    let (n, c, s) = (sh[0], sh[1], sh[2..].iter().product::<usize>());
    let v = x.to_vec_f32().unwrap();
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for ch in 0..c {
        let xs: Vec<f64> =
            (0..n).flat_map(|i| (0..s).map(move |t| (i * c + ch) * s + t)).map(|k| v[k] as f64).collect();
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        mean[ch] = m;
        var[ch] = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
    }
    (mean, var)
}

fn count(bn: &BatchNorm1d) -> i64 {
    bn.num_batches_tracked.as_ref().unwrap().data().to_vec::<i64>().unwrap()[0]
}

#[test]
fn parameter_and_buffer_names_follow_pytorch() {
    let ln = LayerNorm::new(&[3, 4]);
    assert_eq!(names(ln.named_parameters()), ["weight", "bias"]);
    assert_eq!(ln.weight.as_ref().unwrap().shape(), &[3, 4]);
    assert!(vals(ln.weight.as_ref().unwrap()).iter().all(|&v| v == 1.0));
    assert!(vals(ln.bias.as_ref().unwrap()).iter().all(|&v| v == 0.0));
    assert!(LayerNorm::with_options(&[4], 1e-6, false, true).named_parameters().is_empty());
    assert_eq!(names(LayerNorm::with_options(&[4], 1e-6, true, false).named_parameters()), ["weight"]);

    assert_eq!(names(RMSNorm::new(&[8]).named_parameters()), ["weight"]);
    assert!(RMSNorm::with_options(&[8], Some(1e-6), false).named_parameters().is_empty());

    let gn = GroupNorm::new(2, 6).unwrap();
    assert_eq!(names(gn.named_parameters()), ["weight", "bias"]);
    assert_eq!(gn.weight.as_ref().unwrap().shape(), &[6]);
    assert!(GroupNorm::new(4, 6).unwrap_err().to_string().contains("divisible"));
    assert!(GroupNorm::with_options(2, 6, 1e-5, false).unwrap().named_parameters().is_empty());

    let bn = BatchNorm2d::new(5);
    assert_eq!(names(bn.named_parameters()), ["weight", "bias"]);
    assert_eq!(names(bn.named_buffers()), ["running_mean", "running_var", "num_batches_tracked"]);
    let sd = bn.state_dict();
    assert_eq!(
        sd.keys().cloned().collect::<Vec<_>>(),
        ["bias", "num_batches_tracked", "running_mean", "running_var", "weight"]
    );
    assert_eq!(sd["num_batches_tracked"].dtype(), DType::I64);
    assert_eq!(sd["num_batches_tracked"].shape(), &[] as &[usize]);
    assert_eq!(sd["running_mean"].to_vec_f32().unwrap(), vec![0.0; 5]);
    assert_eq!(sd["running_var"].to_vec_f32().unwrap(), vec![1.0; 5]);
    assert_eq!(bn.num_parameters().total, 10);
    let bare = BatchNorm1d::with_options(3, 1e-5, Some(0.1), false, false);
    assert!(bare.state_dict().is_empty());
}

#[test]
fn nested_names_and_mode_switching() {
    #[derive(Module)]
    struct Net {
        norm: LayerNorm,
        bn: BatchNorm1d,
        #[module(training)]
        training: bool,
    }
    let mut net = Net { norm: LayerNorm::new(&[4]), bn: BatchNorm1d::new(4), training: true };
    assert_eq!(names(net.named_parameters()), ["norm.weight", "norm.bias", "bn.weight", "bn.bias"]);
    assert_eq!(names(net.named_buffers()), ["bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]);
    net.eval();
    assert!(!net.bn.is_training());
    net.train();
    assert!(net.bn.is_training());
}

#[test]
fn layer_group_rms_norm_forward_and_gradients() {
    let x = Tensor::from_array(uniform(&[4, 6], -3.0, 3.0, 1)).requires_grad_(true);
    let ln = LayerNorm::new(&[6]);
    let y = ln.forward(&x).unwrap();
    for row in vals(&y).chunks(6) {
        let m = row.iter().map(|&v| v as f64).sum::<f64>() / 6.0;
        let v = row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / 6.0;
        assert!(m.abs() < 1e-6 && (v - 1.0).abs() < 1e-4, "mean {m} var {v}");
    }
    y.sum_all().backward().unwrap();
    // d(Σ y)/d bias = number of rows; d/d weight = Σ x̂ = 0 per column only on average.
    assert_eq!(ln.bias.as_ref().unwrap().grad().unwrap().to_vec_f32().unwrap(), vec![4.0; 6]);
    assert!(ln.weight.as_ref().unwrap().grad().is_some());

    let rms = RMSNorm::with_options(&[2], Some(0.0), true);
    let y = rms.forward(&Tensor::from_vec(vec![3.0, 4.0], &[1, 2]).unwrap()).unwrap();
    let r = 12.5f64.sqrt();
    close(&vals(&y), &[3.0 / r, 4.0 / r], 1e-6, "rms");

    let gn = GroupNorm::with_options(2, 4, 0.0, true).unwrap();
    let y = gn.forward(&Tensor::from_vec(vec![1.0, 3.0, 10.0, 14.0], &[1, 4]).unwrap()).unwrap();
    close(&vals(&y), &[-1.0, 1.0, -1.0, 1.0], 1e-6, "group");
    assert!(gn.forward(&Tensor::zeros(&[1, 6])).unwrap_err().to_string().contains("[N, 4, *]"));
}

#[test]
fn batch_norm_running_statistics_follow_the_closed_form() {
    let bn = BatchNorm1d::new(3);
    let (mut rm, mut rv) = (vec![0.0f64; 3], vec![1.0f64; 3]);
    for step in 0..4u64 {
        // 3-d input [N, C, L]; a shifted distribution per step.
        let x = uniform(&[5, 3, 4], -1.0 + step as f32, 2.0 + 2.0 * step as f32, 40 + step);
        let y = bn.forward(&Tensor::from_array(x.clone())).unwrap();
        let (m, v) = channel_stats(&x);
        for c in 0..3 {
            rm[c] = 0.9 * rm[c] + 0.1 * m[c];
            rv[c] = 0.9 * rv[c] + 0.1 * v[c];
        }
        close(&vals(bn.running_mean.as_ref().unwrap()), &rm, 1e-5, "running_mean");
        close(&vals(bn.running_var.as_ref().unwrap()), &rv, 1e-5, "running_var");
        assert_eq!(count(&bn), step as i64 + 1);
        // The output uses the batch statistics (biased variance).
        let xv = x.to_vec_f32().unwrap();
        let n = 20.0;
        let expect: Vec<f64> = (0..60)
            .map(|k| {
                let c = (k / 4) % 3;
                (xv[k] as f64 - m[c]) / (v[c] * (n - 1.0) / n + 1e-5).sqrt()
            })
            .collect();
        close(&vals(&y), &expect, 1e-5, "output");
    }
}

#[test]
fn batch_norm_cumulative_average_without_momentum() {
    let bn = BatchNorm1d::with_options(2, 1e-5, None, true, true);
    let mut means = Vec::new();
    let mut vars = Vec::new();
    for step in 0..3u64 {
        let x = uniform(&[6, 2], -2.0, 1.0 + step as f32, 60 + step);
        bn.forward(&Tensor::from_array(x.clone())).unwrap();
        let (m, v) = channel_stats(&x);
        means.push(m);
        vars.push(v);
    }
    // Cumulative average: factor 1/k at step k, so the running values are plain averages.
    let avg = |v: &Vec<Vec<f64>>| (0..2).map(|c| v.iter().map(|s| s[c]).sum::<f64>() / 3.0).collect::<Vec<_>>();
    close(&vals(bn.running_mean.as_ref().unwrap()), &avg(&means), 1e-5, "running_mean");
    close(&vals(bn.running_var.as_ref().unwrap()), &avg(&vars), 1e-5, "running_var");
    assert_eq!(count(&bn), 3);
}

#[test]
fn batch_norm_eval_uses_and_keeps_the_running_statistics() {
    let mut bn = BatchNorm2d::new(2);
    bn.running_mean.as_ref().unwrap().set_data(Array::from_vec(vec![1.0, -2.0], &[2]).unwrap()).unwrap();
    bn.running_var.as_ref().unwrap().set_data(Array::from_vec(vec![4.0, 0.25], &[2]).unwrap()).unwrap();
    bn.weight.as_ref().unwrap().set_data(Array::from_vec(vec![2.0, 1.0], &[2]).unwrap()).unwrap();
    bn.bias.as_ref().unwrap().set_data(Array::from_vec(vec![0.5, 0.0], &[2]).unwrap()).unwrap();
    bn.eval();
    let xa = uniform(&[2, 2, 3, 3], -2.0, 2.0, 7);
    let x = Tensor::from_array(xa.clone()).requires_grad_(true);
    let y = bn.forward(&x).unwrap();
    let xv = xa.to_vec_f32().unwrap();
    let expect: Vec<f64> = (0..36)
        .map(|k| match (k / 9) % 2 {
            0 => (xv[k] as f64 - 1.0) / (4.0f64 + 1e-5).sqrt() * 2.0 + 0.5,
            _ => (xv[k] as f64 + 2.0) / (0.25f64 + 1e-5).sqrt(),
        })
        .collect();
    close(&vals(&y), &expect, 1e-5, "eval output");
    assert_eq!(vals(bn.running_mean.as_ref().unwrap()), vec![1.0, -2.0]);
    assert_eq!(bn.state_dict()["num_batches_tracked"].to_vec::<i64>().unwrap(), vec![0]);
    // The input gradient is the constant scale; parameters get gradients; buffers none.
    y.sum_all().backward().unwrap();
    let g = x.grad().unwrap().to_vec_f32().unwrap();
    close(&g[..9], &[2.0 / (4.0f64 + 1e-5).sqrt(); 9], 1e-6, "dx");
    assert!(bn.weight.as_ref().unwrap().grad().is_some());
    assert!(bn.running_mean.as_ref().unwrap().grad().is_none());

    // Without running statistics, evaluation still uses the batch statistics.
    let mut bare = BatchNorm1d::with_options(2, 0.0, Some(0.1), false, false);
    bare.eval();
    let y = bare.forward(&Tensor::from_vec(vec![1.0, 10.0, 3.0, 20.0], &[2, 2]).unwrap()).unwrap();
    close(&vals(&y), &[-1.0, -1.0, 1.0, 1.0], 1e-6, "batch stats in eval");
}

#[test]
fn batch_norm_checks_ranks_and_channels() {
    let bn1 = BatchNorm1d::new(3);
    let bn2 = BatchNorm2d::new(3);
    assert!(bn1.forward(&Tensor::zeros(&[2, 3, 2, 2])).unwrap_err().to_string().contains("2-d"));
    assert!(bn2.forward(&Tensor::zeros(&[2, 3])).unwrap_err().to_string().contains("4-d"));
    assert!(bn1.forward(&Tensor::zeros(&[2, 4])).unwrap_err().to_string().contains("[N, 3, *]"));
    assert!(bn1.forward(&Tensor::zeros(&[1, 3])).unwrap_err().to_string().contains("more than 1 value"));
    // A failed forward leaves the buffers alone.
    assert_eq!(bn1.state_dict()["num_batches_tracked"].to_vec::<i64>().unwrap(), vec![0]);
}

#[test]
fn state_dict_round_trip_restores_running_statistics() {
    let mut a = BatchNorm1d::new(4);
    for step in 0..3 {
        a.forward(&Tensor::from_array(uniform(&[8, 4], -1.0, 3.0, 90 + step))).unwrap();
    }
    a.weight.as_ref().unwrap().set_data(uniform(&[4], 0.5, 1.5, 99)).unwrap();
    let sd = a.state_dict();
    let mut b = BatchNorm1d::new(4);
    let report = b.load_state_dict(&sd, true).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(count(&b), 3);
    a.eval();
    b.eval();
    let x = Tensor::from_array(uniform(&[5, 4], -2.0, 2.0, 100));
    assert_eq!(vals(&a.forward(&x).unwrap()), vals(&b.forward(&x).unwrap()));
    // The snapshot is not changed by later training steps.
    let before = sd["running_mean"].to_vec_f32().unwrap();
    a.train();
    a.forward(&Tensor::from_array(uniform(&[8, 4], 5.0, 6.0, 101))).unwrap();
    assert_eq!(sd["running_mean"].to_vec_f32().unwrap(), before);
    assert_ne!(vals(a.running_mean.as_ref().unwrap()), before);
    // Reset.
    a.reset_running_stats().unwrap();
    assert_eq!(vals(a.running_var.as_ref().unwrap()), vec![1.0; 4]);
    assert_eq!(count(&a), 0);

    let ln = LayerNorm::new(&[3]);
    ln.weight.as_ref().unwrap().set_data(Array::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap()).unwrap();
    let ln2 = LayerNorm::new(&[3]);
    assert!(ln2.load_state_dict(&ln.state_dict(), true).unwrap().is_clean());
    assert_eq!(vals(ln2.weight.as_ref().unwrap()), vec![1.0, 2.0, 3.0]);
}
