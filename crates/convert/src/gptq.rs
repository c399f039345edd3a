//! GPTQ rounding (Frantar et al., 2022): quantize a Linear layer's weight one input row at
//! a time and spread each row's rounding error over the rows not yet rounded, weighted by
//! the layer's input statistics, so that the layer's output on those inputs moves less
//! than with rounding to nearest.
//!
//! Burn's Linear weight is `[K, N]` (`y = x W`): row `k` multiplies input feature `k`, and
//! a [`Rule`]'s blocks lie along the output axis `N`, within a row. With `H = Σ xᵀx` over
//! calibration inputs (the Gram matrix, damped) and `U` the upper Cholesky factor of
//! `H⁻¹`, rows are rounded in order of decreasing `H_kk` (the paper's "act order": the
//! features with the most energy first, while later rows can still absorb their error);
//! after row `k` is rounded, every later row `r` becomes `w_r - U_kr (w_k - q_k) / U_kk`.
//! Each row's block scales are searched as [`quantize_values`] does, on the row as it is
//! when its turn comes.

use super::quantize::{QTensor, Rule, quantize_values};
use medfm::model::Error;

/// Damping added to the Gram matrix's diagonal, as a fraction of its mean diagonal: keeps
/// `H` invertible where the calibration inputs span fewer directions than `K` (the mask
/// decoder's token layers see a few rows per prompt) and limits how far errors are moved.
pub const DAMPING: f64 = 0.01;

/// Round `values` (a Linear weight of `shape = [K, N]`, row-major) by `rule` (blocks along
/// `N` only) with GPTQ error feedback over `gram`, the `K x K` Gram matrix of the layer's
/// inputs (row-major). Returns the quantized tensor in the same layout as
/// [`quantize_values`] gives.
pub fn quantize(
    values: &[f32],
    shape: &[usize],
    rule: &Rule,
    gram: &[f64],
) -> Result<QTensor, Error> {
    let &[k, n] = shape else {
        return Err(Error::Weights(format!(
            "GPTQ rounds Linear weights [K, N], got shape {shape:?}"
        )));
    };
    if rule.block.len() != 1 {
        return Err(Error::Weights(format!(
            "GPTQ needs blocks within a row, got block {:?}",
            rule.block
        )));
    }
    if values.len() != k * n || gram.len() != k * k {
        return Err(Error::Weights(format!(
            "GPTQ: {} values and a Gram matrix of {} entries for shape {shape:?}",
            values.len(),
            gram.len()
        )));
    }
    if values.iter().any(|v| !v.is_finite()) || gram.iter().any(|v| !v.is_finite()) {
        return Err(Error::Weights(
            "GPTQ: a weight or a calibration statistic is not finite".into(),
        ));
    }
    // Act order: input features by decreasing energy (stable, so ties keep their order).
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| gram[b * k + b].total_cmp(&gram[a * k + a]));
    let mut h = vec![0.0f64; k * k];
    for (i, &oi) in order.iter().enumerate() {
        for (j, &oj) in order.iter().enumerate() {
            h[i * k + j] = gram[oi * k + oj];
        }
    }
    // A feature no calibration input touched: its row cannot move the outputs seen.
    for i in 0..k {
        if h[i * k + i] == 0.0 {
            h[i * k + i] = 1.0;
        }
    }
    let damp = DAMPING * (0..k).map(|i| h[i * k + i]).sum::<f64>() / k as f64;
    for i in 0..k {
        h[i * k + i] += damp;
    }
    let u = upper_factor_of_inverse(h, k)?;

    let mut w: Vec<f64> = order
        .iter()
        .flat_map(|&o| values[o * n..(o + 1) * n].iter().map(|&v| f64::from(v)))
        .collect();
    let mut rows: Vec<(usize, QTensor)> = Vec::with_capacity(k);
    let mut err = vec![0.0f64; n];
    let mut row = vec![0.0f32; n];
    for i in 0..k {
        for (r, &v) in row.iter_mut().zip(&w[i * n..(i + 1) * n]) {
            *r = v as f32;
        }
        let q = quantize_values(&row, &[1, n], rule)?;
        let rounded = q.dequantize();
        for j in 0..n {
            err[j] = (w[i * n + j] - f64::from(rounded[j])) / u[i * k + i];
        }
        rows.push((order[i], q));
        for (r, later) in w[(i + 1) * n..].chunks_exact_mut(n).enumerate() {
            let f = u[i * k + i + 1 + r];
            if f != 0.0 {
                for (v, e) in later.iter_mut().zip(&err) {
                    *v -= e * f;
                }
            }
        }
    }
    // Back to the weight's row order.
    rows.sort_by_key(|(index, _)| *index);
    Ok(QTensor::stack_rows(
        rows.into_iter().map(|(_, q)| q).collect(),
    ))
}

/// The upper triangular `U` with a positive diagonal such that `H⁻¹ = Uᵀ U`, for the
/// symmetric positive definite `h` (`n x n`, row-major).
///
/// With `J` the index reversal, `J H J = L Lᵀ` (lower Cholesky) gives `H = R Rᵀ` with
/// `R = J L J` upper triangular, so `H⁻¹ = R⁻ᵀ R⁻¹` and `U = R⁻¹` (upper, positive
/// diagonal: the unique upper Cholesky factor of `H⁻¹`). One factorisation and one
/// triangular inverse.
pub fn upper_factor_of_inverse(h: Vec<f64>, n: usize) -> Result<Vec<f64>, Error> {
    // Lower Cholesky factor of the reversed matrix, in place.
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            l[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
        }
    }
    for j in 0..n {
        let d = l[j * n + j] - l[j * n..j * n + j].iter().map(|v| v * v).sum::<f64>();
        if d <= 0.0 || !d.is_finite() {
            return Err(Error::Weights(
                "GPTQ: the damped Gram matrix is not positive definite".into(),
            ));
        }
        let d = d.sqrt();
        l[j * n + j] = d;
        let row_j = l[j * n..j * n + j].to_vec();
        for i in j + 1..n {
            let row_i = &mut l[i * n..i * n + j + 1];
            let s = row_i[j]
                - row_i[..j]
                    .iter()
                    .zip(&row_j)
                    .map(|(a, b)| a * b)
                    .sum::<f64>();
            row_i[j] = s / d;
        }
    }
    // L⁻¹ (lower), row by row: row i = (e_i - Σ_{m<i} L_im row m) / L_ii (row m of L⁻¹
    // is zero right of its diagonal).
    let mut inv = vec![0.0f64; n * n];
    for i in 0..n {
        let (done, rest) = inv.split_at_mut(i * n);
        let row = &mut rest[..n];
        row[i] = 1.0;
        for m in 0..i {
            let f = l[i * n + m];
            if f != 0.0 {
                for (v, p) in row[..=m].iter_mut().zip(&done[m * n..m * n + m + 1]) {
                    *v -= f * p;
                }
            }
        }
        let d = l[i * n + i];
        for v in &mut row[..=i] {
            *v /= d;
        }
    }
    // R⁻¹ = J L⁻¹ J.
    let mut u = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            u[i * n + j] = inv[(n - 1 - i) * n + (n - 1 - j)];
        }
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::Bits;

    /// Deterministic values in -1..1.
    fn noise(n: usize, seed: u32) -> Vec<f64> {
        let mut state = seed | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f64 / u32::MAX as f64) * 2.0 - 1.0
            })
            .collect()
    }

    /// `rows x k` inputs whose features are correlated (a few shared directions).
    fn inputs(rows: usize, k: usize) -> Vec<f64> {
        let mix = noise(4 * k, 7);
        let z = noise(rows * 4, 11);
        let e = noise(rows * k, 13);
        (0..rows * k)
            .map(|idx| {
                let (r, c) = (idx / k, idx % k);
                (0..4).map(|d| z[r * 4 + d] * mix[d * k + c]).sum::<f64>() * 2.0 + 0.1 * e[idx]
            })
            .collect()
    }

    fn gram(x: &[f64], rows: usize, k: usize) -> Vec<f64> {
        let mut g = vec![0.0; k * k];
        for r in 0..rows {
            let row = &x[r * k..(r + 1) * k];
            for i in 0..k {
                for j in 0..k {
                    g[i * k + j] += row[i] * row[j];
                }
            }
        }
        g
    }

    /// `Uᵀ U H = I` for a random positive definite matrix.
    #[test]
    fn upper_factor_inverts() {
        let (rows, k) = (40, 12);
        let x = inputs(rows, k);
        let mut h = gram(&x, rows, k);
        for i in 0..k {
            h[i * k + i] += 0.01;
        }
        let u = upper_factor_of_inverse(h.clone(), k).unwrap();
        for i in 0..k {
            for j in 0..i {
                assert_eq!(u[i * k + j], 0.0, "U is upper triangular");
            }
            assert!(u[i * k + i] > 0.0);
        }
        for i in 0..k {
            for j in 0..k {
                // (Uᵀ U H)_ij = Σ_a Σ_b U_ai U_ab H_bj
                let v: f64 = (0..k)
                    .map(|a| {
                        u[a * k + i] * (0..k).map(|b| u[a * k + b] * h[b * k + j]).sum::<f64>()
                    })
                    .sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-8, "({i},{j}): {v}");
            }
        }
    }

    #[test]
    fn indefinite_matrices_are_refused() {
        let h = vec![1.0, 2.0, 2.0, 1.0];
        assert!(upper_factor_of_inverse(h, 2).is_err());
    }

    /// On inputs like the calibration ones, GPTQ's 4-bit weight moves the layer's output
    /// less than rounding to nearest, with the same block layout and value range.
    #[test]
    fn error_feedback_moves_the_output_less_than_rounding_to_nearest() {
        let (rows, k, n) = (200, 32, 48);
        let x = inputs(rows, k);
        let w: Vec<f32> = noise(k * n, 5).iter().map(|&v| v as f32 * 0.2).collect();
        let rule = Rule::new(Bits::Q4, &[16]).gptq();
        let g = gram(&x, rows, k);
        let ours = quantize(&w, &[k, n], &rule, &g).unwrap();
        let nearest = quantize_values(&w, &[k, n], &rule).unwrap();
        assert_eq!(ours.scales.len(), nearest.scales.len());
        assert!(ours.values.iter().all(|v| v.abs() <= 7));
        let out_err = |q: &QTensor| {
            let dq = q.dequantize();
            let mut total = 0.0;
            for r in 0..rows {
                for j in 0..n {
                    let d: f64 = (0..k)
                        .map(|i| x[r * k + i] * f64::from(w[i * n + j] - dq[i * n + j]))
                        .sum();
                    total += d * d;
                }
            }
            total
        };
        let (e_gptq, e_nearest) = (out_err(&ours), out_err(&nearest));
        assert!(
            e_gptq < 0.5 * e_nearest,
            "output error: GPTQ {e_gptq:.4e}, nearest {e_nearest:.4e}"
        );
    }

    #[test]
    fn malformed_inputs_are_refused() {
        let rule = Rule::new(Bits::Q4, &[16]).gptq();
        let w = vec![0.1f32; 4 * 16];
        assert!(quantize(&w, &[4, 16], &rule, &[1.0; 9]).is_err());
        assert!(quantize(&w, &[4, 16, 1], &rule, &[1.0; 16]).is_err());
        let mut g = vec![0.0; 16];
        g[0] = f64::NAN;
        assert!(quantize(&w, &[4, 16], &rule, &g).is_err());
    }
}
