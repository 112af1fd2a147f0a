//! `#[derive(Module)]` in a crate that depends only on the `kiln` facade: the generated code
//! names `::kiln::nn`, since `kiln_nn` is not a dependency here.

use kiln::prelude::*;

#[derive(Module)]
struct Layer {
    weight: Tensor,
    #[module(buffer)]
    stats: Tensor,
    #[module(training)]
    training: bool,
}

#[derive(Module)]
struct Net {
    #[module(rename = "Layers")]
    layers: Vec<Layer>,
    bias: Option<Tensor>,
}

#[test]
fn derive_through_the_facade_prelude() {
    let layer =
        || Layer { weight: Tensor::ones(&[2, 2]).requires_grad_(true), stats: Tensor::zeros(&[2]), training: true };
    let mut net = Net { layers: vec![layer(), layer()], bias: Some(Tensor::zeros(&[2]).requires_grad_(true)) };
    let names: Vec<String> = net.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["Layers.0.weight", "Layers.1.weight", "bias"]);
    assert_eq!(net.named_buffers().len(), 2);
    assert_eq!(net.freeze("Layers.*").unwrap(), 2);
    assert_eq!(net.num_parameters(), kiln::nn::ParamCount { total: 10, trainable: 2 });
    net.eval();
    assert!(!net.layers[1].training && !net.is_training());
    let sd = net.state_dict();
    assert!(net.load_state_dict(&sd, true).unwrap().is_clean());
}
