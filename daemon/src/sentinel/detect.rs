//! The two statistics the sentinel keeps per agent and action class: an
//! exponentially weighted moving average (with its variance) and a
//! two-sided CUSUM change detector. Pure arithmetic, tested on series
//! whose results were worked out by hand.

/// EWMA of a series and of its squared deviation (Welford-style EWMVar):
/// `mean += a*d`, `var = (1-a)*(var + a*d^2)` with `d = x - mean`. The
/// first value sets the mean and a variance of 0.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ewma {
    pub mean: f64,
    pub var: f64,
    /// Values seen since the last reset.
    pub n: u32,
}

impl Ewma {
    pub fn update(&mut self, x: f64, alpha: f64) {
        if self.n == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let d = x - self.mean;
            self.mean += alpha * d;
            self.var = (1.0 - alpha) * (self.var + alpha * d * d);
        }
        self.n = self.n.saturating_add(1);
    }

    /// Forget the baseline: the next value starts it again.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Which way a CUSUM crossed its threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Up,
    Down,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Up => "up",
            Side::Down => "down",
        }
    }
}

/// Two-sided tabular CUSUM over standardised values `z`:
/// `S+ = max(0, S+ + z - k)`, `S- = max(0, S- - z - k)`; an alarm when
/// either exceeds `h`. `k` is the allowance (half the shift, in standard
/// deviations, the detector is tuned for), `h` the decision interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cusum {
    pub pos: f64,
    pub neg: f64,
}

impl Cusum {
    /// Adds one value; returns the side that crossed `h` and its statistic.
    pub fn step(&mut self, z: f64, k: f64, h: f64) -> Option<(Side, f64)> {
        self.pos = (self.pos + z - k).max(0.0);
        self.neg = (self.neg - z - k).max(0.0);
        if self.pos > h {
            Some((Side::Up, self.pos))
        } else if self.neg > h {
            Some((Side::Down, self.neg))
        } else {
            None
        }
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn ewma_on_a_known_series() {
        // alpha 0.5 over 10, 20, 20, 0, by hand:
        // 10 -> mean 10, var 0
        // 20 -> d 10, mean 15, var 0.5*(0 + 0.5*100) = 25
        // 20 -> d 5, mean 17.5, var 0.5*(25 + 0.5*25) = 18.75
        // 0  -> d -17.5, mean 8.75, var 0.5*(18.75 + 0.5*306.25) = 85.9375
        let mut e = Ewma::default();
        let want = [(10.0, 0.0), (15.0, 25.0), (17.5, 18.75), (8.75, 85.9375)];
        for (x, (mean, var)) in [10.0, 20.0, 20.0, 0.0].into_iter().zip(want) {
            e.update(x, 0.5);
            assert!(close(e.mean, mean) && close(e.var, var), "{e:?}");
        }
        assert_eq!(e.n, 4);
        e.reset();
        e.update(3.0, 0.5);
        assert_eq!((e.mean, e.var, e.n), (3.0, 0.0, 1));
    }

    #[test]
    fn ewma_of_a_constant_is_the_constant_with_no_variance() {
        let mut e = Ewma::default();
        for _ in 0..100 {
            e.update(7.0, 0.1);
        }
        assert!(close(e.mean, 7.0) && close(e.var, 0.0));
    }

    #[test]
    fn cusum_up_on_a_known_series() {
        // k 0.5, h 4: S+ over z = 0, 0, 1, 1, 2, 2 is 0, 0, 0.5, 1, 2.5,
        // 4 (not above h), then 5.5: the alarm is on the seventh value.
        let mut c = Cusum::default();
        let z = [0.0, 0.0, 1.0, 1.0, 2.0, 2.0];
        let pos = [0.0, 0.0, 0.5, 1.0, 2.5, 4.0];
        for (z, want) in z.into_iter().zip(pos) {
            assert_eq!(c.step(z, 0.5, 4.0), None);
            assert!(close(c.pos, want), "{c:?}");
            assert!(close(c.neg, 0.0));
        }
        let (side, stat) = c.step(2.0, 0.5, 4.0).unwrap();
        assert_eq!(side, Side::Up);
        assert!(close(stat, 5.5));
    }

    #[test]
    fn cusum_down_on_a_known_series() {
        // k 1, h 3: S- over z = -2, -2, 0.5, -3 is 1, 2, 0.5, 2.5, then
        // z = -2.5 gives 4 > 3.
        let mut c = Cusum::default();
        for (z, want) in [(-2.0, 1.0), (-2.0, 2.0), (0.5, 0.5), (-3.0, 2.5)] {
            assert_eq!(c.step(z, 1.0, 3.0), None);
            assert!(close(c.neg, want), "{c:?}");
            assert!(close(c.pos, 0.0));
        }
        let (side, stat) = c.step(-2.5, 1.0, 3.0).unwrap();
        assert_eq!(side, Side::Down);
        assert!(close(stat, 4.0));
        c.reset();
        assert_eq!(c, Cusum::default());
    }

    #[test]
    fn cusum_ignores_noise_within_the_allowance() {
        // |z| <= k never accumulates.
        let mut c = Cusum::default();
        for i in 0..10_000 {
            let z = if i % 2 == 0 { 0.9 } else { -0.9 };
            assert_eq!(c.step(z, 1.0, 0.5), None);
        }
    }
}
