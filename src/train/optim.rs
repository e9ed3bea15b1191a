//! Adam with L2 weight decay (PyTorch `torch.optim.Adam` semantics), written over tensors so
//! that its state (step, first and second moments) can be saved in checkpoints and restored
//! by `--resume`; tch's built-in optimiser does not expose its state. Optional dynamic loss
//! scaling for mixed precision.
use crate::Result;
use std::collections::HashMap;
use tch::{nn::VarStore, Kind, Tensor};

/// One optimiser over a group of trainable variables of a var store.
pub struct Adam {
    params: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Steps taken.
    pub step: i64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl Adam {
    /// Adam (β = 0.9, 0.999, ε = 1e-8) over the variables of `vs` named in `params` (a group
    /// of [`crate::model::param_groups`]). A name the var store lacks is an error.
    pub fn new(vs: &VarStore, params: &[String], weight_decay: f64) -> Result<Self> {
        let vars = vs.variables();
        let mut params = params
            .iter()
            .map(|n| match vars.get(n) {
                Some(t) => Ok((n.clone(), t.shallow_clone())),
                None => Err(crate::Error::Torch(format!(
                    "optimiser: the network has no variable `{n}`"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        params.sort_by(|a, b| a.0.cmp(&b.0));
        params.dedup_by(|a, b| a.0 == b.0);
        let m = params.iter().map(|(_, t)| t.zeros_like()).collect();
        let v = params.iter().map(|(_, t)| t.zeros_like()).collect();
        Ok(Adam {
            params,
            m,
            v,
            step: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        })
    }

    /// Clears the gradients of the optimised variables.
    pub(crate) fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// Whether all gradients are finite (for loss scaling).
    pub(crate) fn grads_finite(&self) -> bool {
        let _g = tch::no_grad_guard();
        // One device sync for all variables.
        let flags: Vec<Tensor> = self
            .params
            .iter()
            .map(|(_, p)| p.grad())
            .filter(|g| g.defined())
            .map(|g| g.isfinite().all())
            .collect();
        flags.is_empty() || Tensor::stack(&flags, 0).all().int64_value(&[]) != 0
    }

    /// One update with learning rate `lr`; gradients are divided by `grad_scale` first.
    pub fn step(&mut self, lr: f64, grad_scale: f64) {
        let _g = tch::no_grad_guard();
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        for (i, (_, p)) in self.params.iter_mut().enumerate() {
            let grad = p.grad();
            if !grad.defined() {
                continue;
            }
            let mut g = grad.to_kind(Kind::Float);
            if grad_scale != 1.0 {
                g /= grad_scale;
            }
            if self.weight_decay != 0.0 {
                g += &*p * self.weight_decay;
            }
            let _ = self.m[i]
                .g_mul_scalar_(self.beta1)
                .g_add_(&(&g * (1.0 - self.beta1)));
            let _ = self.v[i]
                .g_mul_scalar_(self.beta2)
                .g_add_(&(&g * &g * (1.0 - self.beta2)));
            let denom = (&self.v[i] / bc2).sqrt() + self.eps;
            let update = &self.m[i] / denom * (lr / bc1);
            let _ = p.g_sub_(&update);
        }
    }

    /// The state as named tensors (`<prefix>.exp_avg.<var>`, `<prefix>.exp_avg_sq.<var>`,
    /// `<prefix>.step`), for a safetensors file.
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = vec![(format!("{prefix}.step"), Tensor::from_slice(&[self.step]))];
        for (i, (n, _)) in self.params.iter().enumerate() {
            out.push((format!("{prefix}.exp_avg.{n}"), self.m[i].shallow_clone()));
            out.push((
                format!("{prefix}.exp_avg_sq.{n}"),
                self.v[i].shallow_clone(),
            ));
        }
        out
    }

    /// Restores the state written by [`Adam::state`].
    pub(crate) fn load_state(
        &mut self,
        prefix: &str,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<()> {
        let get = |k: String| {
            tensors
                .get(&k)
                .ok_or_else(|| crate::Error::Torch(format!("optimiser state lacks {k}")))
        };
        self.step = get(format!("{prefix}.step"))?.int64_value(&[0]);
        let _g = tch::no_grad_guard();
        for (i, (n, _)) in self.params.iter().enumerate() {
            self.m[i].copy_(get(format!("{prefix}.exp_avg.{n}"))?);
            self.v[i].copy_(get(format!("{prefix}.exp_avg_sq.{n}"))?);
        }
        Ok(())
    }
}

/// Dynamic loss scaling for fp16 autocast (as torch.cuda.amp.GradScaler: start 2^16, halve on
/// overflow and skip the step, double after 2000 good steps). Scale 1 when disabled.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct LossScaler {
    /// Current scale.
    pub scale: f64,
    good_steps: u32,
    enabled: bool,
}

impl LossScaler {
    /// A scaler; `enabled = false` keeps the scale at 1.
    pub fn new(enabled: bool) -> Self {
        LossScaler {
            scale: if enabled { 65536.0 } else { 1.0 },
            good_steps: 0,
            enabled,
        }
    }
    /// Whether the scale is dynamic (mixed precision on).
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }
    /// Records whether the step's gradients were finite; returns whether to apply the step.
    pub fn update(&mut self, finite: bool) -> bool {
        if !self.enabled {
            return true;
        }
        if finite {
            self.good_steps += 1;
            if self.good_steps >= 2000 {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale /= 2.0;
            self.good_steps = 0;
        }
        finite
    }
}

/// Poly learning-rate schedule: base·(1 − iter/max_iter)^power.
pub fn poly_lr(base: f64, iter: usize, max_iter: usize, power: f64) -> f64 {
    base * (1.0 - iter as f64 / max_iter.max(1) as f64)
        .max(0.0)
        .powf(power)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{param_groups, Discriminator, DmNet, ModelConfig, Variant};
    use tch::{nn, Device};

    /// Each Adam moves exactly its group: a loss through the segmenter (both encoders) and the
    /// discriminator, one step of the segmenter's optimiser, and only its variables change.
    #[test]
    fn adam_updates_exactly_its_group_and_refuses_unknown_names() {
        tch::manual_seed(0);
        let cfg = ModelConfig {
            width: 0.125,
            input_size: 32,
            num_classes: 2,
            variant: Variant::SeparateEncoders,
            ..Default::default()
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let net = DmNet::new(&vs.root(), &cfg).unwrap();
        let disc = Discriminator::new(&(vs.root() / "discriminator"), &cfg);
        let groups = param_groups(&cfg);
        let mut opt = Adam::new(&vs, &groups.segmenter, 0.0).unwrap();
        let before: HashMap<String, Tensor> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.detach().copy()))
            .collect();
        let x = Tensor::randn([2, 1, 32, 32], (Kind::Float, Device::Cpu));
        let out = net.forward_t(&x, false);
        disc.forward(&out.probabilities())
            .mean(Kind::Float)
            .backward();
        opt.step(1e-3, 1.0);
        let moved: Vec<String> = vs
            .variables()
            .into_iter()
            .filter(|(n, t)| !t.equal(&before[n]))
            .map(|(n, _)| n)
            .collect();
        let (mut moved, mut want) = (moved, groups.segmenter);
        moved.sort();
        want.sort();
        assert_eq!(moved, want);
        let err = Adam::new(&vs, &["encoder.conv9.weight".to_string()], 0.0)
            .err()
            .expect("unknown name refused");
        assert!(err.to_string().contains("encoder.conv9.weight"), "{err}");
    }
}
