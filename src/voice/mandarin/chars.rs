//! Character classes as the Python front end sees them: Python's whitespace and decimal digits (its
//! `str.strip()`, `\d` and `int()`), pypinyin's han characters, and the processor's narrower idea of
//! Chinese.

/// The zero of every run of ten Unicode decimal digits (category Nd), as Python 3.11 (Unicode 14.0)
/// knows them: Python's `\d` matches exactly these runs and `int()` reads each by its offset from
/// the zero. Unicode keeps every Nd character in such a run of 0 to 9. Listed rather than taken from
/// the regex crate, whose `\d` follows a newer Unicode with more digits than the reference's.
const DIGIT_ZEROS: [u32; 66] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66, 0xDE6, 0xE50, 0xED0,
    0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620,
    0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10, 0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0,
    0x112F0, 0x11450, 0x114D0, 0x11650, 0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60,
    0x16AC0, 0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// The value of a decimal digit as Python's `int()` reads it ('7' and full-width '７' alike).
pub fn digit_value(c: char) -> Option<u32> {
    let c = c as u32;
    let i = DIGIT_ZEROS.partition_point(|&z| z <= c);
    let zero = *DIGIT_ZEROS.get(i.checked_sub(1)?)?;
    (c - zero < 10).then_some(c - zero)
}

/// A regex class matching what Python's `\d` matches (`negated`: its `\D`).
pub fn digit_class(negated: bool) -> String {
    let runs: String = DIGIT_ZEROS.iter().map(|z| format!("\\x{{{z:X}}}-\\x{{{:X}}}", z + 9)).collect();
    format!("[{}{runs}]", if negated { "^" } else { "" })
}

/// Python's `str.isspace()`: Unicode's White_Space plus the four separators U+001C to U+001F.
pub fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

/// baker.py's `is_zh`: only U+4E00 to U+9FA5 count as Chinese for the processor.
pub fn is_zh(c: char) -> bool {
    ('\u{4e00}'..='\u{9fa5}').contains(&c)
}

/// pypinyin's `RE_HANS` (a UCS-4 build): the characters it looks readings up for. Wider than `is_zh`:
/// 〇, the CJK extensions and compatibility ideographs are read by pypinyin but not taken by the
/// processor.
pub fn is_hans(c: char) -> bool {
    const RANGES: [(u32, u32); 19] = [
        (0x3007, 0x3007),
        (0xE815, 0xE864),
        (0xFA18, 0xFA18),
        (0x3400, 0x4DBF),
        (0x4E00, 0x9FFF),
        (0xF900, 0xFAFF),
        (0x20000, 0x2A6DF),
        (0x2A703, 0x2B73F),
        (0x2B740, 0x2B81D),
        (0x2B825, 0x2BF6E),
        (0x2C029, 0x2CE93),
        (0x2D016, 0x2D016),
        (0x2D11B, 0x2EBD9),
        (0x2F80A, 0x2FA1F),
        (0x30000, 0x3134A),
        (0x300F7, 0x31288),
        (0x30EDD, 0x30EDD),
        (0x30EDE, 0x30EDE),
        (0x31350, 0x32389),
    ];
    let c = c as u32;
    RANGES.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_pythons() {
        assert_eq!(digit_value('0'), Some(0));
        assert_eq!(digit_value('9'), Some(9));
        assert_eq!(digit_value('７'), Some(7));
        assert_eq!(digit_value('٣'), Some(3));
        assert_eq!(digit_value('/'), None);
        assert_eq!(digit_value(':'), None);
        assert_eq!(digit_value('²'), None); // No, not Nd: Python's \d does not match it
        assert_eq!(digit_value('〇'), None);
        let class = regex::Regex::new(&digit_class(false)).unwrap();
        let not = regex::Regex::new(&digit_class(true)).unwrap();
        for c in ['0', '5', '９', '٩', '𝟘'] {
            assert!(class.is_match(&c.to_string()) && !not.is_match(&c.to_string()), "{c}");
        }
        for c in ['a', '二', '\n', '²', '.'] {
            assert!(!class.is_match(&c.to_string()) && not.is_match(&c.to_string()), "{c}");
        }
    }

    #[test]
    fn whitespace_is_pythons() {
        assert_eq!(py_strip("\u{1f} \u{3000}你好\t\n"), "你好");
        assert_eq!(py_strip("\u{200b}你"), "\u{200b}你"); // zero-width space is not whitespace
    }

    #[test]
    fn han_classes() {
        assert!(is_zh('中') && is_hans('中'));
        assert!(!is_zh('〇') && is_hans('〇'));
        assert!(!is_zh('\u{9fa6}') && is_hans('\u{9fa6}'));
        assert!(!is_zh('𠀀') && is_hans('𠀀'));
        assert!(!is_hans('，') && !is_hans('a'));
    }
}
