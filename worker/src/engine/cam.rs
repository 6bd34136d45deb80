//! Class activation maps from a target layer's activations `A` (K×h×w) and the gradient `g` of
//! one logit with respect to them, with the formulas pytorch-grad-cam implements.

use tch::{Kind, Tensor};
pub use xcam_shared::targets::{Faithfulness, LabelSelection, Method};

/// The ReLU'd map (h×w) of one image: `a` and `g` are K×h×w. `g` may be `None` only for a
/// method that does not need it ([`Method::needs_gradient`]).
pub fn cam(method: Method, a: &Tensor, g: Option<&Tensor>) -> Tensor {
    let spatial = &[1i64, 2][..];
    let channels = &[0i64][..];
    let weighted = |weights: Tensor| (weights * a).sum_dim_intlist(channels, false, Kind::Float);
    let map = match (method, g) {
        (Method::EigenCam, _) => first_component(a),
        (_, None) => a.zeros_like().sum_dim_intlist(channels, false, Kind::Float),
        (Method::GradCam, Some(g)) => weighted(g.mean_dim(spatial, true, Kind::Float)),
        (Method::HiResCam, Some(g)) => (g * a).sum_dim_intlist(channels, false, Kind::Float),
        (Method::GradCamPlusPlus, Some(g)) => {
            let g2 = g.pow_tensor_scalar(2);
            let g3 = g.pow_tensor_scalar(3);
            let sum_a = a.sum_dim_intlist(spatial, true, Kind::Float);
            let alpha = &g2 / (&g2 * 2.0 + sum_a * &g3 + 1e-6);
            let alpha = alpha.where_self(&g.ne(0.0), &alpha.zeros_like());
            weighted((g.relu() * alpha).sum_dim_intlist(spatial, true, Kind::Float))
        }
        (Method::XGradCam, Some(g)) => {
            let sum_a = a.sum_dim_intlist(spatial, true, Kind::Float);
            weighted((g * a / (sum_a + 1e-7)).sum_dim_intlist(spatial, true, Kind::Float))
        }
        (Method::LayerCam, Some(g)) => (g.relu() * a).sum_dim_intlist(channels, false, Kind::Float),
    };
    map.relu()
}

/// EigenCAM: the activations (one K-vector per cell, centred over the cells) projected on their
/// first right singular vector. LAPACK's SVD, like NumPy's, so the sign agrees with the
/// reference library's.
fn first_component(a: &Tensor) -> Tensor {
    let (k, h, w) = a.size3().expect("activations are K×h×w");
    let cells = a.reshape([k, h * w]).transpose(0, 1);
    let centred = &cells - cells.mean_dim(&[0i64][..], true, Kind::Float);
    let (_, _, v) = centred.svd(true, true);
    centred.matmul(&v.select(1, 0)).reshape([h, w])
}
