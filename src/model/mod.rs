//! The DMNet network (paper §3.1): a shared ResNet encoder, a U-Net decoder, a DeepLab v3+
//! decoder and the FCN discriminator (§3.4), built with tch.
