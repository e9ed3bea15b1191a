//! Mean Teacher (Tarvainen & Valpola, NeurIPS 2017), as SSL4MIS's
//! `train_mean_teacher_2D.py` trains it:
//! 1. the student sees the labeled and the unlabeled slices in one forward pass;
//! 2. the supervised loss on the labeled part;
//! 3. the teacher (an exponential moving average of the student, α = 0.99) sees the unlabeled
//!    slices plus Gaussian noise (σ 0.1, clipped to ±0.2), without gradient;
//! 4. consistency = MSE between the student's and the teacher's softmax on the unlabeled part,
//!    weighted 0.1 × sigmoid ramp-up over the whole run;
//! 5. one Adam step of the student, then the EMA update of the teacher.
//!
//! The student is evaluated, checkpointed and exported (as SSL4MIS saves and tests `model`).
use super::{Learner, Nets, StepInput, StepLosses, StudentTeacher};
use crate::artifact::TrainConfig;
use crate::model::DmNet;
use crate::train::losses;
use crate::train::optim::LossScaler;
use crate::train::pieces;
use crate::Result;
use tch::{Device, Tensor};

/// The student (root), the teacher (`teacher.*`) and the student's optimiser.
pub(crate) struct MeanTeacher {
    st: StudentTeacher,
    cfg: TrainConfig,
}

impl MeanTeacher {
    pub(crate) fn new(train: &TrainConfig, device: Device) -> Result<Self> {
        Ok(MeanTeacher {
            st: StudentTeacher::new(train, device)?,
            cfg: train.clone(),
        })
    }
}

impl Learner for MeanTeacher {
    fn step(&mut self, input: StepInput, scaler: &mut LossScaler) -> Result<StepLosses> {
        let mt = &self.cfg.mean_teacher;
        let at = input.at;
        let unl = super::unlabeled(input.unl, "mean-teacher")?;
        let masks = super::masks(input.lab)?;
        let x = Tensor::cat(&[&input.lab.images, &unl.images], 0);
        let student = super::logits(&self.st.student, &x, input.amp);
        let seed = self.cfg.seed ^ (at.global_step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let noise = pieces::clipped_noise(&unl.images.size(), mt.noise, seed, unl.images.device());
        let teacher =
            tch::no_grad(|| super::logits(&self.st.teacher, &(&unl.images + noise), input.amp));
        let w = mt.consistency * losses::sigmoid_rampup(at.global_step, at.ramp_steps, mt.ramp_up);
        let (total, sup, cons) =
            losses::mean_teacher_loss(self.cfg.supervised_loss, &student, &teacher, masks, w);
        let seg = super::update_segmenter(&mut self.st.nets, &total, scaler, at)?;
        pieces::ema_update(&self.st.nets.vs, &self.st.ema_pairs, mt.ema, at.global_step);
        Ok(StepLosses {
            seg,
            dice: sup.double_value(&[]),
            semi: cons.double_value(&[]),
            ..Default::default()
        })
    }
    fn net(&self) -> &DmNet {
        &self.st.student
    }
    fn nets(&self) -> &Nets {
        &self.st.nets
    }
    fn nets_mut(&mut self) -> &mut Nets {
        &mut self.st.nets
    }
}
