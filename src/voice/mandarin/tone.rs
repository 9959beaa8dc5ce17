//! pypinyin's TONE3 style with `NeutralToneWith5Mixin`: "zhōng" → "zhong1", "lǜ" → "lv4", a
//! toneless "le" → "le5".

/// The tone-marked letters and what `replace_symbol_to_number` writes for each (pypinyin's
/// phonetic_symbol.py); ü becomes v.
const MARKED: [(char, &str); 29] = [
    ('ā', "a1"),
    ('á', "a2"),
    ('ǎ', "a3"),
    ('à', "a4"),
    ('ē', "e1"),
    ('é', "e2"),
    ('ě', "e3"),
    ('è', "e4"),
    ('ō', "o1"),
    ('ó', "o2"),
    ('ǒ', "o3"),
    ('ò', "o4"),
    ('ī', "i1"),
    ('í', "i2"),
    ('ǐ', "i3"),
    ('ì', "i4"),
    ('ū', "u1"),
    ('ú', "u2"),
    ('ǔ', "u3"),
    ('ù', "u4"),
    ('ü', "v"),
    ('ǖ', "v1"),
    ('ǘ', "v2"),
    ('ǚ', "v3"),
    ('ǜ', "v4"),
    ('ń', "n2"),
    ('ň', "n3"),
    ('ǹ', "n4"),
    ('ḿ', "m2"),
];

/// Marks written as a letter and a combining accent (m̄, m̀, ê̄, ê̌), replaced after the single ones.
/// (ế and ề are single characters.)
const MARKED_PAIRS: [(&str, &str); 4] =
    [("m\u{304}", "m1"), ("m\u{300}", "m4"), ("ê\u{304}", "ê1"), ("ê\u{30c}", "ê3")];
const MARKED_E: [(char, &str); 2] = [('ế', "ê2"), ('ề', "ê4")];

/// One reading (as pypinyin's dictionaries write it) in TONE3 style with 5 for the neutral tone.
pub fn tone3(reading: &str) -> String {
    // TONE2: each marked letter becomes the letter and its tone number ("zho1ng").
    let mut s = String::with_capacity(reading.len() + 1);
    for c in reading.chars() {
        match MARKED.iter().chain(&MARKED_E).find(|(m, _)| *m == c) {
            Some((_, plain)) => s.push_str(plain),
            None => s.push(c),
        }
    }
    for (marked, plain) in MARKED_PAIRS {
        if s.contains(marked) {
            s = s.replace(marked, plain);
        }
    }
    // TONE3: `^([a-zêü]+)([1-5])([a-zêü]*)$` → letters, rest, number ("zhong1").
    let letter = |c: char| c.is_ascii_lowercase() || c == 'ê' || c == 'ü';
    if let Some(at) = s.find(|c: char| !letter(c)) {
        let number = s[at..].chars().next().is_some_and(|c| ('1'..='5').contains(&c));
        // (The number is one byte, so `at + 1` is where the rest starts.)
        if at > 0 && number && s[at + 1..].chars().all(letter) {
            s = format!("{}{}{}", &s[..at], &s[at + 1..], &s[at..at + 1]);
        }
    }
    // NeutralToneWith5Mixin: no number anywhere (Python's \d) → the neutral tone, 5. An empty
    // reading stays empty.
    if !s.is_empty() && !s.chars().any(|c| super::chars::digit_value(c).is_some()) {
        s.push('5');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::tone3;

    #[test]
    fn tone3_style() {
        for (reading, out) in [
            ("zhōng", "zhong1"),
            ("guó", "guo2"),
            ("lǜ", "lv4"),
            ("lüè", "lve4"),
            ("nǚ", "nv3"),
            ("le", "le5"),
            ("er", "er5"),
            ("ń", "n2"),
            ("ňg", "ng3"),
            ("ḿ", "m2"),
            ("m\u{300}", "m4"),
            ("hm", "hm5"),
            ("ê\u{304}", "ê1"),
            ("ế", "ê2"),
            ("", ""),
        ] {
            assert_eq!(tone3(reading), out, "{reading}");
        }
    }
}
