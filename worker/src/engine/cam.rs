//! Class activation maps from a target layer's activations `A` (K×h×w) and the gradient `g` of
//! one logit with respect to them, with the formulas pytorch-grad-cam implements.

use tch::{Kind, Tensor};
pub use xcam_shared::targets::{LabelSelection, Method};

/// The ReLU'd map (h×w) of one image: `a` and `g` are K×h×w.
pub fn cam(method: Method, a: &Tensor, g: &Tensor) -> Tensor {
    let map = match method {
        Method::GradCam => {
            let weights = g.mean_dim(&[1i64, 2][..], true, Kind::Float);
            (weights * a).sum_dim_intlist(&[0i64][..], false, Kind::Float)
        }
        Method::HiResCam => (g * a).sum_dim_intlist(&[0i64][..], false, Kind::Float),
        Method::GradCamPlusPlus => {
            let g2 = g.pow_tensor_scalar(2);
            let g3 = g.pow_tensor_scalar(3);
            let sum_a = a.sum_dim_intlist(&[1i64, 2][..], true, Kind::Float);
            let alpha = &g2 / (&g2 * 2.0 + sum_a * &g3 + 1e-6);
            let alpha = alpha.where_self(&g.ne(0.0), &alpha.zeros_like());
            let weights = (g.relu() * alpha).sum_dim_intlist(&[1i64, 2][..], true, Kind::Float);
            (weights * a).sum_dim_intlist(&[0i64][..], false, Kind::Float)
        }
    };
    map.relu()
}
