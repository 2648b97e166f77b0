//! Resource quantities (`500m`, `1Gi`, `1e3`) re-emitted in the canonical form
//! the real server stores (apimachinery `resource.Quantity`): `'0.5'` becomes
//! `500m`, `1024Mi` becomes `1Gi`, `1.5Gi` becomes `1536Mi`, `1000` becomes
//! `1k`; values are rounded up to `milli` precision for resource lists. A
//! client that diffs what it sent against what is stored must expect this.

/// A parsed quantity: the value in units of 10^-9, and the input's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parsed {
    nanos: i128,
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    BinarySi,
    DecimalSi,
    DecimalExponent,
}

const NANO: i128 = 1_000_000_000;

fn parse(text: &str) -> Option<Parsed> {
    let s = text.trim();
    let num_end = s
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || ((*c == '-' || *c == '+') && *i == 0)))
        .map_or(s.len(), |(i, _)| i);
    let (num, suffix) = s.split_at(num_end);
    let (neg, digits) = match num.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if (int.is_empty() && frac.is_empty()) || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    // The number in units of 10^-9 (fraction digits beyond nine round up).
    let mut nanos: i128 = int.parse::<i128>().unwrap_or(0).checked_mul(NANO)?;
    let frac9: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    nanos += frac9.parse::<i128>().ok()?;
    if frac.len() > 9 && frac[9..].chars().any(|c| c != '0') {
        nanos += 1;
    }
    let (factor_num, factor_den, format): (i128, i128, Format) = match suffix {
        "Ki" => (1 << 10, 1, Format::BinarySi),
        "Mi" => (1 << 20, 1, Format::BinarySi),
        "Gi" => (1 << 30, 1, Format::BinarySi),
        "Ti" => (1 << 40, 1, Format::BinarySi),
        "Pi" => (1 << 50, 1, Format::BinarySi),
        "Ei" => (1 << 60, 1, Format::BinarySi),
        "n" => (1, NANO, Format::DecimalSi),
        "u" => (1, 1_000_000, Format::DecimalSi),
        "m" => (1, 1_000, Format::DecimalSi),
        "" => (1, 1, Format::DecimalSi),
        "k" => (1_000, 1, Format::DecimalSi),
        "M" => (1_000_000, 1, Format::DecimalSi),
        "G" => (NANO, 1, Format::DecimalSi),
        "T" => (1_000 * NANO, 1, Format::DecimalSi),
        "P" => (1_000_000 * NANO, 1, Format::DecimalSi),
        "E" => (NANO * NANO, 1, Format::DecimalSi),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().ok()?;
            if !(-9..=18).contains(&exp) {
                return None;
            }
            if exp >= 0 {
                (10i128.pow(exp.unsigned_abs()), 1, Format::DecimalExponent)
            } else {
                (1, 10i128.pow(exp.unsigned_abs()), Format::DecimalExponent)
            }
        }
        _ => return None,
    };
    let scaled = nanos.checked_mul(factor_num)?;
    // Division rounds up (away from zero), as the server rounds.
    let value = (scaled + factor_den - 1) / factor_den;
    Some(Parsed {
        nanos: if neg { -value } else { value },
        format,
    })
}

/// The canonical text of `text` rounded up to milli precision, or `None`
/// when it is not a quantity (the server rejects it).
pub fn canonical(text: &str) -> Option<String> {
    let mut q = parse(text)?;
    // SetDefaults_ResourceList: round up to milli.
    let milli = NANO / 1_000;
    if q.nanos % milli != 0 {
        let up = if q.nanos > 0 { 1 } else { 0 };
        q.nanos = (q.nanos / milli + up) * milli;
    }
    Some(format(q))
}

/// The value in units of 10^-9, for comparisons (`requests` ≤ `limits`).
pub fn nanos(text: &str) -> Option<i128> {
    parse(text).map(|q| q.nanos)
}

fn format(q: Parsed) -> String {
    if q.nanos == 0 {
        return "0".into();
    }
    let sign = if q.nanos < 0 { "-" } else { "" };
    let abs = q.nanos.abs();
    let mut fmt = q.format;
    if fmt == Format::BinarySi && (abs % NANO != 0 || abs < 1024 * NANO) {
        fmt = Format::DecimalSi;
    }
    if fmt == Format::BinarySi {
        let mut n = abs / NANO;
        let mut i = 0;
        while i < 6 && n % 1024 == 0 {
            n /= 1024;
            i += 1;
        }
        return format!("{sign}{n}{}", ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][i]);
    }
    // The largest exponent (a multiple of 3, from -9) at which the mantissa is whole.
    let mut exp = -9i32;
    let mut mant = abs;
    while exp < 18 && mant % 1000 == 0 {
        mant /= 1000;
        exp += 3;
    }
    if fmt == Format::DecimalExponent {
        return if exp == 0 {
            format!("{sign}{mant}")
        } else {
            format!("{sign}{mant}e{exp}")
        };
    }
    let suffix = match exp {
        -9 => "n",
        -6 => "u",
        -3 => "m",
        0 => "",
        3 => "k",
        6 => "M",
        9 => "G",
        12 => "T",
        15 => "P",
        _ => "E",
    };
    format!("{sign}{mant}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn canonical_forms_match_the_server() {
        for (input, want) in [
            ("0.5", "500m"),
            ("500m", "500m"),
            ("2", "2"),
            ("1.5", "1500m"),
            ("1000m", "1"),
            ("1000", "1k"),
            ("1500", "1500"),
            ("1Gi", "1Gi"),
            ("1024Mi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Ki", "512"),
            ("128974848", "128974848"),
            ("129e6", "129e6"),
            ("0.1m", "1m"),
            ("0", "0"),
            ("100M", "100M"),
        ] {
            assert_eq!(canonical(input).as_deref(), Some(want), "{input}");
        }
        assert_eq!(canonical("lots"), None);
        assert_eq!(canonical("1Gb"), None);
    }
}
