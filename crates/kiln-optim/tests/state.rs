//! State dicts (round trip, snapshot semantics, errors) and in-place updates without
//! per-step allocation.

use kiln_autograd::{Array, DType, Result, Tensor};
use kiln_optim::{Adagrad, Adam, AdamW, Optimizer, Params, RmsProp, Sgd, StateDict};

const KINDS: [&str; 7] =
    ["sgd", "sgd_nesterov", "adam_amsgrad", "adamw", "rmsprop", "rmsprop_centered_momentum", "adagrad"];

fn make(kind: &str, params: Vec<(String, Tensor)>) -> Box<dyn Optimizer> {
    // Two groups, the second with its own lr and no weight decay.
    let (first, second) = params.split_at(1);
    let p = Params::new().group(first.to_vec()).group_with(second.to_vec(), Some(0.02), Some(0.0));
    match kind {
        "sgd" => Box::new(Sgd::new(p, 0.1).momentum(0.9).dampening(0.1).weight_decay(0.01)),
        "sgd_nesterov" => Box::new(Sgd::new(p, 0.1).momentum(0.9).nesterov(true)),
        "adam_amsgrad" => Box::new(Adam::new(p, 0.01).amsgrad(true).weight_decay(0.1)),
        "adamw" => Box::new(AdamW::new(p, 0.01)),
        "rmsprop" => Box::new(RmsProp::new(p, 0.01)),
        "rmsprop_centered_momentum" => Box::new(RmsProp::new(p, 0.01).centered(true).momentum(0.5).weight_decay(0.1)),
        "adagrad" => Box::new(Adagrad::new(p, 0.1).lr_decay(0.1).initial_accumulator_value(0.1)),
        _ => unreachable!(),
    }
}

fn fresh_params() -> Vec<(String, Tensor)> {
    let w: Vec<f32> = (0..6).map(|i| (i as f32 * 0.37).sin()).collect();
    vec![
        ("fc.weight".to_string(), Tensor::from_vec(w, &[2, 3]).unwrap().requires_grad_(true)),
        ("fc.bias".to_string(), Tensor::from_vec(vec![0.1, -0.2], &[2]).unwrap().requires_grad_(true)),
    ]
}

/// Deterministic gradients for step `k`.
fn set_grads(params: &[(String, Tensor)], k: usize) {
    for (j, (_, p)) in params.iter().enumerate() {
        let g: Vec<f32> = (0..p.numel()).map(|i| ((i * 3 + j * 5 + k * 7) as f32 * 0.61).cos()).collect();
        p.set_grad(Some(Array::from_vec(g, p.shape()).unwrap())).unwrap();
    }
}

fn run(opt: &mut dyn Optimizer, params: &[(String, Tensor)], steps: std::ops::Range<usize>) {
    for k in steps {
        if k == 2 {
            opt.set_lr(0.05); // an lr change the state dict must carry
        }
        set_grads(params, k);
        opt.step().unwrap();
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec_f32().unwrap().iter().map(|x| x.to_bits()).collect()
}

#[test]
fn round_trip_continues_bit_identically() {
    for kind in KINDS {
        let a = fresh_params();
        let mut opt_a = make(kind, a.clone());
        run(opt_a.as_mut(), &a, 0..6);

        let b = fresh_params();
        let mut opt_b = make(kind, b.clone());
        run(opt_b.as_mut(), &b, 0..3);
        let sd = opt_b.state_dict().unwrap();

        // A fresh optimizer (other lr) over copies of the weights, restored from the dict.
        let c: Vec<(String, Tensor)> = b
            .iter()
            .map(|(n, p)| (n.clone(), Tensor::from_array(p.data().contiguous()).requires_grad_(true)))
            .collect();
        let mut opt_c = make(kind, c.clone());
        opt_c.set_lr(123.0);
        opt_c.load_state_dict(&sd).unwrap();
        assert_eq!(opt_c.lr(), 0.05, "{kind}: the group lr comes back");
        run(opt_c.as_mut(), &c, 3..6);
        for ((n, pa), (_, pc)) in a.iter().zip(&c) {
            assert_eq!(bits(pa), bits(pc), "{kind}: {n} differs after resuming");
        }
    }
}

#[test]
fn state_dict_keys_and_values() {
    let params = fresh_params();
    let mut opt = make("adam_amsgrad", params.clone());
    run(opt.as_mut(), &params, 0..3);
    let sd = opt.state_dict().unwrap();
    let keys: Vec<&str> = sd.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "fc.bias.exp_avg",
            "fc.bias.exp_avg_sq",
            "fc.bias.max_exp_avg_sq",
            "fc.bias.step",
            "fc.weight.exp_avg",
            "fc.weight.exp_avg_sq",
            "fc.weight.max_exp_avg_sq",
            "fc.weight.step",
            "param_groups.0.lr",
            "param_groups.1.lr",
        ]
    );
    assert_eq!(sd["fc.weight.step"].dtype(), DType::I64);
    assert_eq!(sd["fc.weight.step"].to_vec::<i64>().unwrap(), vec![3]);
    assert_eq!(sd["fc.weight.exp_avg"].shape(), &[2, 3]);
    assert_eq!(sd["param_groups.1.lr"].item().unwrap(), 0.05);
    // fc.bias[0] (group 1: lr 0.02 until the change to 0.05, no weight decay) against the
    // AMSGrad recurrence in f64.
    let (mut m, mut v, mut vmax) = (0.0f64, 0.0f64, 0.0f64);
    let mut p_now = fresh_params()[1].1.to_vec_f32().unwrap()[0] as f64;
    for k in 0..3 {
        let g = ((5 + k * 7) as f32 * 0.61).cos() as f64; // set_grads' value
        m = 0.9 * m + 0.1 * g;
        v = 0.999 * v + 0.001 * g * g;
        vmax = vmax.max(v);
        let lr = if k == 2 { 0.05 } else { 0.02 };
        let t = k + 1;
        p_now -= lr / (1.0 - 0.9f64.powi(t)) * m / (vmax.sqrt() / (1.0 - 0.999f64.powi(t)).sqrt() + 1e-8);
    }
    let got = sd["fc.bias.exp_avg"].to_vec_f32().unwrap()[0] as f64;
    assert!((got - m).abs() < 1e-6, "exp_avg {got} vs {m}");
    let got_p = params[1].1.to_vec_f32().unwrap()[0] as f64;
    assert!((got_p - p_now).abs() < 1e-5, "param {got_p} vs {p_now}");
}

#[test]
fn a_state_dict_is_a_snapshot() {
    let params = fresh_params();
    let mut opt = make("rmsprop_centered_momentum", params.clone());
    run(opt.as_mut(), &params, 0..2);
    let sd = opt.state_dict().unwrap();
    let saved: Vec<(String, Vec<f32>)> =
        sd.iter().filter(|(_, a)| a.dtype() == DType::F32).map(|(k, a)| (k.clone(), a.to_vec_f32().unwrap())).collect();
    run(opt.as_mut(), &params, 2..4);
    for (k, v) in saved {
        assert_eq!(sd[&k].to_vec_f32().unwrap(), v, "{k} changed under the saved dict");
    }
    assert_ne!(
        opt.state_dict().unwrap()["fc.weight.square_avg"].to_vec_f32().unwrap(),
        sd["fc.weight.square_avg"].to_vec_f32().unwrap()
    );
}

#[test]
fn load_errors_leave_the_optimizer_unchanged() {
    let params = fresh_params();
    let mut opt = make("adamw", params.clone());
    run(opt.as_mut(), &params, 0..2);
    let good = opt.state_dict().unwrap();

    let mut unknown = good.clone();
    unknown.insert("fc.wieght.exp_avg".into(), Array::zeros(&[2, 3]));
    let err = opt.load_state_dict(&unknown).unwrap_err().to_string();
    assert!(err.contains("fc.wieght.exp_avg"), "{err}");

    let mut shape = good.clone();
    shape.insert("fc.weight.exp_avg".into(), Array::zeros(&[3, 2]));
    let err = opt.load_state_dict(&shape).unwrap_err().to_string();
    assert!(err.contains("[3, 2]") && err.contains("[2, 3]"), "{err}");

    let mut missing = good.clone();
    missing.remove("fc.weight.exp_avg_sq");
    assert!(opt.load_state_dict(&missing).is_err());

    let mut bad_lr = good.clone();
    bad_lr.insert("param_groups.0.lr".into(), Array::zeros(&[2]));
    assert!(opt.load_state_dict(&bad_lr).is_err());

    assert_eq!(opt.lr(), 0.01);
    assert_eq!(opt.state_dict().unwrap().len(), good.len());
    // An empty dict resets the state.
    opt.load_state_dict(&StateDict::new()).unwrap();
    assert!(opt.state_dict().unwrap().keys().all(|k| k.starts_with("param_groups")));
}

#[test]
fn duplicate_names_cannot_be_saved() {
    let p = Tensor::zeros(&[1]).requires_grad_(true);
    let q = Tensor::zeros(&[1]).requires_grad_(true);
    let opt = Sgd::new(vec![("w", p), ("w", q)], 0.1);
    assert!(opt.state_dict().unwrap_err().to_string().contains("\"w\""));
}

fn ptr(a: &Array) -> *const f32 {
    a.as_slice::<f32>().unwrap().as_ptr()
}

/// Steps every kind of optimizer over a parameter of `n` elements and checks that neither
/// the parameter's buffer nor the state buffers move once allocated.
fn check_in_place(n: usize) {
    for kind in KINDS {
        let w =
            Tensor::from_vec((0..n).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect(), &[n]).unwrap().requires_grad_(true);
        let b = Tensor::zeros(&[3]).requires_grad_(true);
        let params = vec![("w".to_string(), w.clone()), ("b".to_string(), b.clone())];
        let mut opt = make(kind, params.clone());
        set_grads(&params, 0);
        let before = ptr(&w.data());
        opt.step().unwrap();
        let buffers = |opt: &dyn Optimizer| -> Vec<(String, usize)> {
            let sd = opt.state_dict().unwrap();
            sd.iter()
                .filter(|(k, a)| k.starts_with("w.") && a.dtype() == DType::F32)
                .map(|(k, a)| (k.clone(), ptr(a) as usize))
                .collect()
        };
        let first = buffers(opt.as_ref()); // the dict is dropped before the next step
        assert!(!first.is_empty(), "{kind}");
        for k in 1..4 {
            set_grads(&params, k);
            opt.step().unwrap();
        }
        assert_eq!(ptr(&w.data()), before, "{kind}: the parameter's buffer moved");
        assert_eq!(buffers(opt.as_ref()), first, "{kind}: a state buffer moved");
    }
}

#[test]
fn updates_are_in_place() {
    check_in_place(5);
}

#[test]
fn large_parameters_update_in_place_and_match_small_ones() {
    // Large enough for the parallel split; odd so the halves differ in length.
    let n = 3 * kiln_tensor::parallel::PAR_ELEMS + 7;
    check_in_place(n);
    // Every element follows the same update as in a one-element parameter.
    for kind in KINDS {
        let vals: Vec<f32> = (0..n).map(|i| ((i * 31) % 101) as f32 * 0.02 - 1.0).collect();
        let big = vec![
            ("w".to_string(), Tensor::from_vec(vals.clone(), &[n]).unwrap().requires_grad_(true)),
            ("b".to_string(), Tensor::zeros(&[1]).requires_grad_(true)),
        ];
        let mut opt = make(kind, big.clone());
        let grads: Vec<f32> = (0..n).map(|i| ((i * 7) % 13) as f32 * 0.3 - 1.7).collect();
        for _ in 0..3 {
            big[0].1.set_grad(Some(Array::from_vec(grads.clone(), &[n]).unwrap())).unwrap();
            opt.step().unwrap();
        }
        let got = big[0].1.to_vec_f32().unwrap();
        for i in [0, 1, n / 2 - 1, n / 2, n / 2 + 1, n - 1] {
            let one = vec![
                ("w".to_string(), Tensor::from_vec(vec![vals[i]], &[1]).unwrap().requires_grad_(true)),
                ("b".to_string(), Tensor::zeros(&[1]).requires_grad_(true)),
            ];
            let mut o = make(kind, one.clone());
            for _ in 0..3 {
                one[0].1.set_grad(Some(Array::from_vec(vec![grads[i]], &[1]).unwrap())).unwrap();
                o.step().unwrap();
            }
            assert_eq!(got[i].to_bits(), one[0].1.to_vec_f32().unwrap()[0].to_bits(), "{kind} element {i}");
        }
    }
}

#[test]
fn a_shared_parameter_buffer_is_copied_not_corrupted() -> Result<()> {
    let w = Tensor::from_vec(vec![1.0, 2.0], &[2])?.requires_grad_(true);
    let saved = w.data(); // e.g. held by a backward graph
    let mut opt = Adam::new(vec![w.clone()], 0.1);
    w.set_grad(Some(Array::from_vec(vec![1.0f32, 1.0], &[2])?))?;
    opt.step()?;
    assert_eq!(saved.to_vec_f32()?, vec![1.0, 2.0]);
    assert_ne!(w.to_vec_f32()?, vec![1.0, 2.0]);
    Ok(())
}
