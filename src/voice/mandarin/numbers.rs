//! cn_tn.py's `num2chn`: a string of decimal digits (with at most one '.') read out in Chinese, in
//! the "mid" numbering system and simplified characters, the only way the normaliser calls it.

use super::chars::digit_value;

const DIGITS: [char; 10] = ['零', '一', '二', '三', '四', '五', '六', '七', '八', '九'];

/// 十 百 千 万, then 亿 and the larger units at 10^8, 10^12, ... ("mid": each 10^4 times the last).
const UNITS: [(usize, char); 14] = [
    (1, '十'),
    (2, '百'),
    (3, '千'),
    (4, '万'),
    (8, '亿'),
    (12, '兆'),
    (16, '京'),
    (20, '垓'),
    (24, '秭'),
    (28, '穰'),
    (32, '沟'),
    (36, '涧'),
    (40, '正'),
    (44, '载'),
];

#[derive(Clone, Copy, PartialEq)]
enum Symbol {
    Digit(u32),
    /// 两: a 2 before 百, 千, 万 ... (never before 十, nor after 十).
    Liang,
    /// A unit by its power of ten.
    Unit(usize, char),
    Point,
}

/// `num2chn(number, alt_two=alt_two, use_units=use_units)`. Without units each digit is read alone
/// (phone numbers, years); with them, "2938" is 两千九百三十八.
///
/// Kept from the Python: only ASCII '0's count as leading zeros (its `lstrip('0')`), so full-width
/// "０２０" is read 零百二十零; "00" alone reads as nothing; "10" to "19" drop their leading 一.
pub fn num2chn(number: &str, alt_two: bool, use_units: bool) -> String {
    // The callers pass what their patterns matched: digits with at most one '.' (more would make
    // the Python raise).
    let (int, dec) = number.split_once('.').unwrap_or((number, ""));
    let int: Vec<char> = int.chars().collect();
    let mut symbols =
        if use_units && int.len() > 1 { value(&int) } else { int.iter().map(|&c| Symbol::Digit(digit(c))).collect() };
    if !dec.is_empty() {
        symbols.push(Symbol::Point);
        symbols.extend(dec.chars().map(|c| Symbol::Digit(digit(c))));
    }
    if alt_two {
        for i in 0..symbols.len() {
            if symbols[i] != Symbol::Digit(2) {
                continue;
            }
            let next = symbols.get(i + 1);
            let previous = i.checked_sub(1).map(|p| symbols[p]);
            if let Some(Symbol::Unit(power, _)) = next {
                let previous_ok = match previous {
                    None => true,
                    Some(Symbol::Unit(p, _)) => p != 1,
                    Some(_) => false,
                };
                if *power != 1 && previous_ok {
                    symbols[i] = Symbol::Liang;
                }
            }
        }
    }
    let mut result: Vec<char> = symbols
        .iter()
        .map(|s| match *s {
            Symbol::Digit(d) => DIGITS[d as usize],
            Symbol::Liang => '两',
            Symbol::Unit(_, c) => c,
            Symbol::Point => '点',
        })
        .collect();
    if result.first() == Some(&'点') {
        result.insert(0, '零');
    }
    // 10 to 19 (and 一十万 ...): 十, not 一十.
    if result.len() >= 2 && result[1] == '十' && result[0] == '一' {
        result.remove(0);
    }
    result.into_iter().collect()
}

/// A digit's value; the callers' patterns only let digits through.
fn digit(c: char) -> u32 {
    digit_value(c).unwrap_or(0)
}

/// `get_value`: the digits with their units, recursively around the largest unit that fits.
fn value(digits: &[char]) -> Vec<Symbol> {
    let first = digits.iter().position(|&c| c != '0').unwrap_or(digits.len());
    let stripped = &digits[first..];
    match stripped.len() {
        0 => vec![],
        1 if first > 0 => vec![Symbol::Digit(0), Symbol::Digit(digit(stripped[0]))],
        1 => vec![Symbol::Digit(digit(stripped[0]))],
        n => {
            let &(power, c) = UNITS.iter().rev().find(|(p, _)| *p < n).expect("十 fits any two digits");
            let mut out = value(&digits[..digits.len() - power]);
            out.push(Symbol::Unit(power, c));
            out.extend(value(&stripped[n - power..]));
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::num2chn;

    fn cardinal(s: &str) -> String {
        num2chn(s, true, true)
    }

    #[test]
    fn cardinals() {
        for (n, chinese) in [
            ("0", "零"),
            ("7", "七"),
            ("10", "十"),
            ("15", "十五"),
            ("20", "二十"),
            ("101", "一百零一"),
            ("115", "一百一十五"),
            ("1001", "一千零一"),
            ("2000", "两千"),
            ("2002", "两千零二"),
            ("2938", "两千九百三十八"),
            ("22000", "两万两千"),
            ("32477", "三万两千四百七十七"),
            ("100000", "十万"),
            ("1000000000", "十亿"),
            ("1200", "一千两百"),
            ("99.5", "九十九点五"),
            ("0.5", "零点五"),
            ("3.14", "三点一四"),
            ("05", "零五"),
        ] {
            assert_eq!(cardinal(n), chinese, "{n}");
        }
    }

    #[test]
    fn quirks_kept() {
        assert_eq!(cardinal("00.5"), "零点五"); // "00" reads as nothing, then 点 gets its 零
        assert_eq!(cardinal("007"), "零七");
        assert_eq!(cardinal("00"), "");
        assert_eq!(cardinal("２０２０"), "两千零百二十零"); // full-width zeros are not stripped
        assert_eq!(cardinal("１２３"), "一百二十三");
    }

    #[test]
    fn digit_by_digit() {
        assert_eq!(num2chn("2020", false, false), "二零二零");
        assert_eq!(num2chn("13812345678", false, false), "一三八一二三四五六七八");
        assert_eq!(num2chn("12", false, false), "一二");
    }
}
