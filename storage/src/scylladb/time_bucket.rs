//! Time buckets of the ScyllaDB partitions: UTC days for samples, UTC months for audit events.

/// Milliseconds in one day.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 (UTC) of an instant, the `day` column of `presence_sample`.
pub(crate) fn day_bucket(at_unix_ms: i64) -> i32 {
    clamp_to_i32(at_unix_ms.div_euclid(DAY_MS))
}

/// Every day bucket touched by the window `[from_unix_ms, to_unix_ms)`, oldest first; empty
/// for an empty window.
pub(crate) fn day_buckets(from_unix_ms: i64, to_unix_ms: i64) -> Vec<i32> {
    if to_unix_ms <= from_unix_ms {
        return Vec::new();
    }
    (day_bucket(from_unix_ms)..=day_bucket(to_unix_ms - 1)).collect()
}

/// `year * 100 + month` (UTC) of an instant, the `month` column of `audit_event`.
pub(crate) fn month_bucket(at_unix_ms: i64) -> i32 {
    let (year, month) = year_month_from_days(at_unix_ms.div_euclid(DAY_MS));
    clamp_to_i32(year.saturating_mul(100).saturating_add(month))
}

/// Civil (proleptic Gregorian) year and month of a day count since 1970-01-01, after Howard
/// Hinnant's `civil_from_days`.
fn year_month_from_days(days_since_epoch: i64) -> (i64, i64) {
    let shifted = days_since_epoch.saturating_add(719_468);
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era.saturating_mul(400) + i64::from(month <= 2);
    (year, month)
}

fn clamp_to_i32(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(if value < 0 { i32::MIN } else { i32::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_split_at_utc_midnight() {
        assert_eq!(day_bucket(0), 0);
        assert_eq!(day_bucket(DAY_MS - 1), 0);
        assert_eq!(day_bucket(DAY_MS), 1);
        assert_eq!(day_bucket(-1), -1);
        assert_eq!(day_buckets(0, DAY_MS), vec![0]);
        assert_eq!(day_buckets(DAY_MS - 1, DAY_MS + 1), vec![0, 1]);
        assert_eq!(day_buckets(5, 5), Vec::<i32>::new());
    }

    #[test]
    fn months_follow_the_calendar() {
        let check = |at_unix_ms: i64, expected: i32| {
            assert_eq!(month_bucket(at_unix_ms), expected, "{at_unix_ms}");
        };
        check(0, 197001);
        check(-1, 196912);
        // 2000-02-29T12:00:00Z, a leap day.
        check(951_825_600_000, 200002);
        // 2000-03-01T00:00:00Z.
        check(951_868_800_000, 200003);
        // 2026-11-30T23:59:59.999Z and the next millisecond.
        check(1_796_083_199_999, 202611);
        check(1_796_083_200_000, 202612);
        // 2026-12-31T23:59:59.999Z and 2027-01-01T00:00:00Z.
        check(1_798_761_599_999, 202612);
        check(1_798_761_600_000, 202701);
    }

    #[test]
    fn extreme_instants_do_not_overflow() {
        assert_eq!(month_bucket(i64::MIN), i32::MIN);
        assert_eq!(month_bucket(i64::MAX), i32::MAX);
        assert!(day_bucket(i64::MAX) > 0);
    }
}
