//! Freezing saves real work: fine-tuning only the head of a deep model records no backbone
//! ops, so no backbone activations stay alive, whatever the depth; the frozen parameters get
//! no gradient. Measured with `kiln_autograd::live_nodes()` (recorded ops alive, each holding
//! the arrays its backward saved).
//!
//! The counter is process-wide, so this file holds a single test: nothing else records ops
//! in this test binary while it measures.

use kiln_autograd::gradcheck::uniform;
use kiln_autograd::{live_nodes, Tensor};
use kiln_nn::init::rng;
use kiln_nn::{Forward, Linear, Module, ReLU, Sequential};

#[derive(Module)]
struct Net {
    backbone: Sequential,
    head: Linear,
}

impl Net {
    fn new(depth: usize, width: usize, seed: u64) -> Net {
        let mut r = rng(seed);
        let mut backbone = Sequential::new();
        for _ in 0..depth {
            backbone.push(Linear::new(width, width, true, &mut r));
            backbone.push(ReLU);
        }
        Net { backbone, head: Linear::new(width, 3, true, &mut r) }
    }

    /// The loss `mean(head(backbone(x))²)`.
    fn loss(&self, x: &Tensor) -> Tensor {
        let y = self.head.forward(&self.backbone.forward(x).unwrap()).unwrap();
        (&y * &y).mean_all()
    }
}

/// Live nodes held by the graph of one forward pass (the loss kept alive).
fn nodes_of_forward(net: &Net, x: &Tensor) -> (usize, Tensor) {
    let before = live_nodes();
    let loss = net.loss(x);
    (live_nodes() - before, loss)
}

#[test]
fn frozen_backbone_records_nothing_and_gets_no_gradient() {
    let width = 16;
    let x = Tensor::from_array(uniform(&[8, width], -1.0, 1.0, 1));
    let base = live_nodes();

    // Frozen backbone: the same handful of nodes (the head's) at any depth.
    let mut frozen_counts = Vec::new();
    for depth in [2, 8, 32] {
        let net = Net::new(depth, width, depth as u64);
        assert_eq!(net.freeze("backbone.*").unwrap(), 2 * depth);
        let (nodes, loss) = nodes_of_forward(&net, &x);
        frozen_counts.push(nodes);
        loss.backward().unwrap();
        for (name, p) in net.named_parameters() {
            assert_eq!(p.grad().is_some(), name.starts_with("head."), "{name}");
        }
        drop(loss);
        assert_eq!(live_nodes(), base, "the graph is freed with the loss");
    }
    // linear, mul, mean: only the head and the loss are recorded.
    assert_eq!(frozen_counts, [3, 3, 3]);

    // Unfrozen: two recorded ops (linear, relu) per block on top of the head's.
    for depth in [2, 8, 32] {
        let net = Net::new(depth, width, depth as u64);
        let (nodes, loss) = nodes_of_forward(&net, &x);
        assert_eq!(nodes, 2 * depth + 3, "depth {depth}");
        loss.backward().unwrap();
        assert!(net.parameters().iter().all(|p| p.grad().is_some()));
        drop(loss);
        assert_eq!(live_nodes(), base);
    }

    // Freezing the head too: nothing is recorded at all.
    let net = Net::new(8, width, 3);
    net.freeze("*").unwrap();
    let (nodes, loss) = nodes_of_forward(&net, &x);
    assert_eq!(nodes, 0);
    assert!(!loss.requires_grad() && loss.backward().is_err());
}
