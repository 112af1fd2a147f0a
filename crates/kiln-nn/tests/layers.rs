//! Embedding, Dropout, Identity and Sequential.

use kiln_autograd::{Array, Tensor};
use kiln_nn::init::rng;
use kiln_nn::{Dropout, Embedding, Forward, ForwardModule, Identity, Module, Sequential};

fn ids(v: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_vec_i64(v.to_vec(), shape).unwrap()
}

#[test]
fn embedding_init_is_standard_normal_with_a_zero_padding_row() {
    let e = Embedding::new(500, 40, Some(-2), &mut rng(1)).unwrap();
    assert_eq!(e.padding_idx(), Some(498));
    assert_eq!((e.num_embeddings(), e.embedding_dim()), (500, 40));
    assert_eq!(e.named_parameters().into_iter().map(|(n, _)| n).collect::<Vec<_>>(), ["weight"]);
    assert!(e.weight.requires_grad());
    let w = e.weight.to_vec_f32().unwrap();
    assert!(w[498 * 40..499 * 40].iter().all(|&x| x == 0.0));
    let rest: Vec<f64> = w.iter().enumerate().filter(|(i, _)| i / 40 != 498).map(|(_, &x)| x as f64).collect();
    let n = rest.len() as f64;
    let mean = rest.iter().sum::<f64>() / n;
    let var = rest.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
}

#[test]
fn embedding_forward_picks_rows_and_skips_the_padding_gradient() {
    let w = Tensor::from_vec((0..12).map(|x| x as f32).collect(), &[4, 3]).unwrap().requires_grad_(true);
    let e = Embedding::from_weight(w.clone(), Some(0)).unwrap();
    let y = e.forward(&ids(&[2, 0, 2, 3], &[2, 2])).unwrap();
    assert_eq!(y.shape(), &[2, 2, 3]);
    assert_eq!(y.to_vec_f32().unwrap(), vec![6., 7., 8., 0., 1., 2., 6., 7., 8., 9., 10., 11.]);
    y.sum_all().backward().unwrap();
    // Row 2 was used twice, row 3 once, row 0 is padding, row 1 unused.
    assert_eq!(w.grad().unwrap().to_vec_f32().unwrap(), vec![0., 0., 0., 0., 0., 0., 2., 2., 2., 1., 1., 1.]);
}

#[test]
fn embedding_rejects_bad_arguments() {
    assert!(Embedding::new(4, 2, Some(4), &mut rng(0)).unwrap_err().to_string().contains("padding_idx 4"));
    assert!(Embedding::new(4, 2, Some(-5), &mut rng(0)).is_err());
    assert!(Embedding::from_weight(Tensor::zeros(&[4]), None).unwrap_err().to_string().contains("2-d"));
    let e = Embedding::new(4, 2, None, &mut rng(0)).unwrap();
    assert!(e.forward(&ids(&[4], &[1])).is_err());
}

#[test]
fn dropout_layer_is_seeded_and_follows_the_mode() {
    let x = Tensor::ones(&[1000]);
    let a = Dropout::with_seed(0.3, 7).unwrap();
    let b = Dropout::with_seed(0.3, 7).unwrap();
    let ya = a.forward(&x).unwrap().to_vec_f32().unwrap();
    assert_eq!(ya, b.forward(&x).unwrap().to_vec_f32().unwrap());
    // The generator advances: a second call draws a new mask.
    assert_ne!(ya, a.forward(&x).unwrap().to_vec_f32().unwrap());
    let kept = ya.iter().filter(|&&v| v != 0.0).count();
    assert!((600..800).contains(&kept), "{kept}");
    assert!(ya.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
    // Layers built without a seed draw different masks.
    let (c, d) = (Dropout::new(0.5).unwrap(), Dropout::new(0.5).unwrap());
    assert_ne!(c.forward(&x).unwrap().to_vec_f32().unwrap(), d.forward(&x).unwrap().to_vec_f32().unwrap());

    let mut a = a;
    a.eval();
    assert!(a.forward(&x).unwrap().same(&x));
    assert!(a.named_parameters().is_empty() && a.state_dict().is_empty());
    assert!(Dropout::new(1.2).is_err());
}

#[test]
fn sequential_names_layers_by_index_and_chains_them() {
    let mut seq = Sequential::new()
        .with(Embedding::from_weight(Tensor::ones(&[5, 2]).requires_grad_(true), None).unwrap())
        .with(Dropout::with_seed(0.5, 0).unwrap())
        .with(Identity)
        .with(Sequential::new().with(Embedding::new(3, 3, None, &mut rng(0)).unwrap()));
    assert_eq!(seq.len(), 4);
    let names: Vec<String> = seq.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["0.weight", "3.0.weight"]);
    let mods: Vec<String> = seq.named_modules().into_iter().map(|(n, _)| n).collect();
    assert_eq!(mods, ["", "0", "1", "2", "3", "3.0"]);

    seq.eval();
    assert!(!seq.is_training());
    assert!(Sequential::new().forward(&Tensor::ones(&[2])).unwrap().to_vec_f32().unwrap() == vec![1.0; 2]);
    // Layers run in order: the lookup, then (eval-mode, so identity) dropout, then identity.
    let layers: Vec<Box<dyn ForwardModule>> = vec![
        Box::new(Embedding::from_weight(Tensor::from_vec(vec![1., 2., 3., 4.], &[2, 2]).unwrap(), None).unwrap()),
        Box::new(Dropout::with_seed(0.9, 0).unwrap()),
        Box::new(Identity),
    ];
    let mut head: Sequential = layers.into_iter().collect();
    head.eval();
    let y = head.forward(&ids(&[1, 0], &[2])).unwrap();
    assert_eq!(y.to_vec_f32().unwrap(), vec![3., 4., 1., 2.]);

    // A state dict round trip through the numbered names.
    let sd = seq.state_dict();
    assert_eq!(sd.keys().collect::<Vec<_>>(), ["0.weight", "3.0.weight"]);
    let mut sd2 = sd.clone();
    sd2.insert("0.weight".into(), Array::full(&[5, 2], 2.0));
    assert!(seq.load_state_dict(&sd2, true).unwrap().is_clean());
    assert_eq!(seq.parameters()[0].to_vec_f32().unwrap(), vec![2.0; 10]);
}
