//! Stochastic gradient descent with momentum, dampening, Nesterov and weight decay
//! (PyTorch's `torch.optim.SGD`).

use kiln_autograd::{Array, Error, Result, Tensor};

/// PyTorch's SGD. Per step, for each parameter `p` with gradient `g`:
/// `g += weight_decay·p`; with momentum, `buf = g` on the first step, else
/// `buf = momentum·buf + (1 − dampening)·g`, then `g = g + momentum·buf` (Nesterov) or `g = buf`;
/// finally `p −= lr·g`. Updates are in place: no allocation per step after the first.
///
/// ```
/// use kiln_autograd::Tensor;
/// use kiln_optim::Sgd;
/// let w = Tensor::from_vec(vec![1.0, 2.0], &[2])?.requires_grad_(true);
/// let mut opt = Sgd::new(vec![w.clone()], 0.1);
/// (&w * &w).sum_all().backward()?; // grad = 2w
/// opt.step()?;
/// assert_eq!(w.to_vec_f32()?, vec![0.8, 1.6]);
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
pub struct Sgd {
    params: Vec<Tensor>,
    buffers: Vec<Option<Vec<f32>>>,
    /// Learning rate.
    pub lr: f32,
    /// Momentum factor (0 = none).
    pub momentum: f32,
    /// Dampening of the momentum.
    pub dampening: f32,
    /// Nesterov momentum (needs momentum > 0 and dampening 0).
    pub nesterov: bool,
    /// L2 penalty added to the gradient.
    pub weight_decay: f32,
}

impl Sgd {
    /// Plain SGD over `params` with learning rate `lr`.
    pub fn new(params: Vec<Tensor>, lr: f32) -> Sgd {
        let n = params.len();
        Sgd { params, buffers: vec![None; n], lr, momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.0 }
    }

    /// Sets the momentum factor.
    pub fn momentum(mut self, momentum: f32) -> Sgd {
        self.momentum = momentum;
        self
    }
    /// Sets the dampening.
    pub fn dampening(mut self, dampening: f32) -> Sgd {
        self.dampening = dampening;
        self
    }
    /// Enables Nesterov momentum.
    pub fn nesterov(mut self, nesterov: bool) -> Sgd {
        self.nesterov = nesterov;
        self
    }
    /// Sets the weight decay (L2 penalty).
    pub fn weight_decay(mut self, weight_decay: f32) -> Sgd {
        self.weight_decay = weight_decay;
        self
    }

    /// The parameters being optimized.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// Clears every parameter's gradient.
    pub fn zero_grad(&self) {
        for p in &self.params {
            p.zero_grad();
        }
    }

    /// One update of every parameter that has a gradient.
    pub fn step(&mut self) -> Result<()> {
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::op("sgd", "nesterov momentum requires a momentum and zero dampening"));
        }
        for i in 0..self.params.len() {
            let Some(g) = self.params[i].grad() else { continue };
            let mut buf = self.buffers[i].take();
            let r = self.update(&self.params[i], &g, &mut buf);
            self.buffers[i] = buf;
            r?;
        }
        Ok(())
    }

    fn update(&self, p: &Tensor, g: &Array, buf: &mut Option<Vec<f32>>) -> Result<()> {
        let g = g.f32_cow()?;
        let (lr, mom, damp, wd, nesterov) = (self.lr, self.momentum, self.dampening, self.weight_decay, self.nesterov);
        p.update_data(|data| -> Result<()> {
            let w = data.make_mut_f32()?;
            if w.len() != g.len() {
                return Err(Error::op("sgd", format!("gradient has {} elements, parameter {}", g.len(), w.len())));
            }
            match (mom != 0.0, buf.as_mut()) {
                (false, _) => {
                    for (w, &g) in w.iter_mut().zip(g.iter()) {
                        *w -= lr * (g + wd * *w);
                    }
                }
                (true, None) => {
                    let mut b = Vec::with_capacity(w.len());
                    for (w, &g) in w.iter_mut().zip(g.iter()) {
                        let d = g + wd * *w;
                        b.push(d);
                        *w -= lr * if nesterov { d + mom * d } else { d };
                    }
                    *buf = Some(b);
                }
                (true, Some(b)) => {
                    for ((w, &g), b) in w.iter_mut().zip(g.iter()).zip(b.iter_mut()) {
                        let d = g + wd * *w;
                        *b = mom * *b + (1.0 - damp) * d;
                        *w -= lr * if nesterov { d + mom * *b } else { *b };
                    }
                }
            }
            Ok(())
        })
    }
}
