//! Conv1d, Conv2d, ConvTranspose2d and the pooling layers: parameter names and shapes,
//! PyTorch's default initialisation bounds, forward against the functional ops, builders,
//! and input checks.

use kiln_autograd::ops::conv::{conv2d, conv_transpose2d};
use kiln_autograd::Tensor;
use kiln_nn::init::{rng, uniform};
use kiln_nn::{AdaptiveAvgPool2d, AvgPool2d, Conv1d, Conv2d, ConvTranspose2d, Forward, MaxPool2d, Module};

fn names(m: &dyn Module) -> Vec<String> {
    m.named_parameters().into_iter().map(|(n, _)| n).collect()
}

/// Max |v| and whether the values fill most of `±bound`.
fn within(t: &Tensor, bound: f32) -> bool {
    let v = t.to_vec_f32().unwrap();
    let m = v.iter().fold(0f32, |a, &x| a.max(x.abs()));
    m <= bound && m > 0.8 * bound
}

#[test]
fn conv2d_layer_init_names_and_forward() {
    let c = Conv2d::builder(6, 8, [3, 2]).stride([2, 1]).padding([1, 0]).groups(2).build(&mut rng(1)).unwrap();
    assert_eq!(names(&c), ["weight", "bias"]);
    assert_eq!(c.weight.shape(), &[8, 3, 3, 2]);
    assert_eq!((c.in_channels(), c.out_channels(), c.kernel_size()), (6, 8, [3, 2]));
    // fan_in = (6/2)·3·2 = 18.
    let bound = 1.0 / 18f32.sqrt();
    assert!(
        within(&c.weight, bound) && c.bias.as_ref().unwrap().to_vec_f32().unwrap().iter().all(|v| v.abs() <= bound)
    );
    let x = Tensor::from_array(uniform(&[2, 6, 7, 5], -1.0, 1.0, &mut rng(2)));
    let y = c.forward(&x).unwrap();
    let want = conv2d(&x, &c.weight, c.bias.as_ref(), c.options()).unwrap();
    assert_eq!(y.shape(), &[2, 8, 4, 4]);
    assert_eq!(y.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
    let nb = Conv2d::builder(3, 4, [1, 1]).bias(false).build(&mut rng(3)).unwrap();
    assert_eq!(names(&nb), ["weight"]);
    assert!(c.forward(&Tensor::zeros(&[2, 5, 7, 5])).unwrap_err().to_string().contains("[N, 6, H, W]"));
    assert!(Conv2d::builder(6, 8, [3, 3]).groups(4).build(&mut rng(0)).unwrap_err().to_string().contains("groups"));
}

#[test]
fn conv1d_layer() {
    let c = Conv1d::builder(4, 6, 3).padding(1).dilation(2).groups(2).build(&mut rng(4)).unwrap();
    assert_eq!(c.weight.shape(), &[6, 2, 3]);
    assert!(within(&c.weight, 1.0 / 6f32.sqrt()));
    let y = c.forward(&Tensor::zeros(&[2, 4, 9])).unwrap();
    assert_eq!(y.shape(), &[2, 6, 7]);
    // A zero input gives the bias in every position.
    let b = c.bias.as_ref().unwrap().to_vec_f32().unwrap();
    assert_eq!(y.to_vec_f32().unwrap()[7..14], [b[1]; 7]);
    assert!(c.forward(&Tensor::zeros(&[2, 4, 3, 3])).is_err());
}

#[test]
fn conv_transpose2d_layer_uses_pytorchs_fan_in() {
    let c = ConvTranspose2d::builder(4, 6, [3, 3]).stride([2, 2]).padding([1, 1]).output_padding([1, 1]).groups(2);
    let c = c.build(&mut rng(5)).unwrap();
    assert_eq!(names(&c), ["weight", "bias"]);
    assert_eq!(c.weight.shape(), &[4, 3, 3, 3]);
    assert_eq!((c.in_channels(), c.out_channels()), (4, 6));
    // fan_in = weight.size(1)·kH·kW = 3·9 = 27.
    assert!(within(&c.weight, 1.0 / 27f32.sqrt()));
    let x = Tensor::from_array(uniform(&[1, 4, 3, 4], -1.0, 1.0, &mut rng(6)));
    let y = c.forward(&x).unwrap();
    assert_eq!(y.shape(), &[1, 6, 6, 8]);
    let want = conv_transpose2d(&x, &c.weight, c.bias.as_ref(), c.options()).unwrap();
    assert_eq!(y.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
}

#[test]
fn pooling_layers() {
    let x = Tensor::from_vec((0..32).map(|v| v as f32).collect(), &[1, 2, 4, 4]).unwrap();
    let m = MaxPool2d::new([2, 2]);
    assert!(names(&m).is_empty());
    assert_eq!(m.forward(&x).unwrap().to_vec_f32().unwrap(), vec![5., 7., 13., 15., 21., 23., 29., 31.]);
    let a = AvgPool2d::new([2, 2]);
    assert_eq!(a.forward(&x).unwrap().to_vec_f32().unwrap(), vec![2.5, 4.5, 10.5, 12.5, 18.5, 20.5, 26.5, 28.5]);
    // 3x3 windows, stride 2, padding 1: the corner window holds 4 input elements.
    let y = AvgPool2d::new([3, 3]).stride([2, 2]).padding([1, 1]).count_include_pad(false).forward(&x).unwrap();
    assert_eq!(y.to_vec_f32().unwrap()[0], (0. + 1. + 4. + 5.) / 4.);
    let y = AvgPool2d::new([3, 3]).stride([2, 2]).padding([1, 1]).forward(&x).unwrap();
    assert_eq!(y.to_vec_f32().unwrap()[0], (0. + 1. + 4. + 5.) / 9.);
    let g = AdaptiveAvgPool2d::new([1, 1]).forward(&x).unwrap();
    assert_eq!(g.shape(), &[1, 2, 1, 1]);
    assert_eq!(g.to_vec_f32().unwrap(), vec![7.5, 23.5]);
    let y = MaxPool2d::new([3, 3]).stride([1, 1]).padding([1, 1]).forward(&x).unwrap();
    assert_eq!(y.shape(), &[1, 2, 4, 4]);
}
