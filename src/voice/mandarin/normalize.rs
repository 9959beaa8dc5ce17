//! cn_tn.py's `NSWNormalizer(text).normalize()`: numbers and the like written out in Chinese
//! characters, pass by pass in the Python's order (dates, money, mobile and fixed phone numbers,
//! fractions, percentages, numbers before a measure word, long digit strings, other numbers, then
//! its letter-二-letter fix).
//!
//! Each pass works as the Python does, odd as that is at times: it collects its pattern's matches
//! over the whole text first, then for each match replaces the *first occurrence* of the matched
//! string in the text as it stands, which need not be where it matched ("编号1234有12个": the "12"
//! of "12个" is replaced inside "1234", giving 十二三十四有十二个). Python's `\d` is any Unicode
//! decimal digit, full-width ones included (`chars::digit_class`).

use super::chars::{digit_class, py_strip};
use super::numbers::num2chn;
use regex::Regex;
use std::sync::LazyLock;

const CURRENCY_UNITS: &str = "((亿|千万|百万|万|千|百)|(亿|千万|百万|万|千|百|)元|(亿|千万|百万|万|千|百|)块|角|毛|分)";

/// The measure words a number is read as a quantity before ("3个" → 三个, where "3" alone would be
/// read the same way, but "2938个" is 两千九百三十八 rather than digit by digit). Bare 克 and 米
/// are not among them (only 千克, 毫米 ...), so "2983.07克" is read 二九八三.零七克.
const COM_QUANTIFIERS: &str =
    "(匹|张|座|回|场|尾|条|个|首|阙|阵|网|炮|顶|丘|棵|只|支|袭|辆|挑|担|颗|壳|窠|曲|墙|群|腔|\
砣|座|客|贯|扎|捆|刀|令|打|手|罗|坡|山|岭|江|溪|钟|队|单|双|对|出|口|头|脚|板|跳|枝|件|贴|\
针|线|管|名|位|身|堂|课|本|页|家|户|层|丝|毫|厘|分|钱|两|斤|担|铢|石|钧|锱|忽|(千|毫|微)克|\
毫|厘|分|寸|尺|丈|里|寻|常|铺|程|(千|分|厘|毫|微)米|撮|勺|合|升|斗|石|盘|碗|碟|叠|桶|笼|盆|\
盒|杯|钟|斛|锅|簋|篮|盘|桶|罐|瓶|壶|卮|盏|箩|箱|煲|啖|袋|钵|年|月|日|季|刻|时|周|天|秒|分|旬|\
纪|岁|世|更|夜|春|夏|秋|冬|代|伏|辈|丸|泡|粒|颗|幢|堆|条|根|支|道|面|片|张|颗|块)";

/// A Python pattern compiled with Python's `\d` and `\D`.
fn pattern(python: &str) -> Regex {
    let rust = python.replace(r"\d", &digit_class(false)).replace(r"\D", &digit_class(true));
    Regex::new(&rust).expect("the normaliser's patterns compile")
}

macro_rules! patterns {
    ($($name:ident = $re:expr;)*) => {
        $(static $name: LazyLock<Regex> = LazyLock::new(|| pattern(&$re));)*
    };
}

patterns! {
    DATE = r"\D+((([089]\d|(19|20)\d{2})年)?(\d{1,2}月(\d{1,2}[日号])?)?)";
    MONEY = format!(r"\D+((\d+(\.\d+)?)[多余几]?{CURRENCY_UNITS}(\d{CURRENCY_UNITS}?)?)");
    MOBILE = r"\D((\+?86 ?)?1([38]\d|5[0-35-9]|7[678]|9[89])\d{8})\D";
    FIXED_PHONE = r"\D((0(10|2[1-3]|[3-9]\d{2})-?)?[1-9]\d{6,7})\D";
    FRACTION = r"(\d+/\d+)";
    PERCENTAGE = r"(\d+(\.\d+)?%)";
    QUANTITY = format!(r"(\d+(\.\d+)?)[多余几]?{COM_QUANTIFIERS}");
    DIGITS = r"(\d{4,32})";
    NUMBER = r"(\d+(\.\d+)?)";
    LETTER_TWO_LETTER = r"(([a-zA-Z]+)二([a-zA-Z]+))";
}

/// `NSWNormalizer(text).normalize()` (the processor strips the text before).
pub fn normalize(text: &str) -> String {
    // The Python wraps the text in '^' and '$' so that its `\D` before a date, an amount or a phone
    // number also matches at the very start or end; it strips every leading '^' and trailing '$'
    // at the end, the text's own included.
    let mut text = format!("^{text}$");
    rewrite(&mut text, &DATE, date);
    rewrite(&mut text, &MONEY, money);
    rewrite(&mut text, &MOBILE, mobile);
    rewrite(&mut text, &FIXED_PHONE, fixed_phone);
    rewrite(&mut text, &FRACTION, fraction);
    text = text.replace('％', "%");
    rewrite(&mut text, &PERCENTAGE, |p| format!("百分之{}", cardinal(py_strip(p).trim_matches('%'))));
    rewrite(&mut text, &QUANTITY, cardinal);
    rewrite(&mut text, &DIGITS, digits);
    rewrite(&mut text, &NUMBER, cardinal);
    // "O2O": its 2 was read 二 by now; between letters it goes back to a 2.
    let matches: Vec<(String, String)> =
        LETTER_TWO_LETTER.captures_iter(&text).map(|c| (c[1].to_string(), format!("{}2{}", &c[2], &c[3]))).collect();
    for (matched, replacement) in matches {
        text = text.replacen(&matched, &replacement, 1);
    }
    text.trim_start_matches('^').trim_end_matches('$').to_string()
}

/// One pass: `for m in pattern.findall(text): text = text.replace(m[0], f(m[0]), 1)`, where m[0] is
/// group 1.
fn rewrite(text: &mut String, pattern: &Regex, f: impl Fn(&str) -> String) {
    let matches: Vec<String> = pattern.captures_iter(text).map(|c| c[1].to_string()).collect();
    for matched in matches {
        *text = text.replacen(&matched, &f(&matched), 1);
    }
}

/// `Cardinal(cardinal=s).cardinal2chntext()`.
fn cardinal(s: &str) -> String {
    num2chn(s, true, true)
}

/// `Digit(digit=s).digit2chntext()`: digit by digit.
fn digits(s: &str) -> String {
    num2chn(s, false, false)
}

/// `Date(date=s).date2chntext()`: the year digit by digit, month and day as numbers. The pattern
/// matches the empty string too (all its parts are optional), which reads as nothing.
fn date(date: &str) -> String {
    let (year, other) = match py_strip(date).split_once('年') {
        Some((year, other)) => (format!("{}年", digits(year)), other),
        None => (String::new(), date),
    };
    if other.is_empty() {
        return year;
    }
    // Where `other` has no 月 the Python reads the whole date as the day; the pattern never gives
    // it such a date (what follows 年 is always a month).
    let (month, day) = match py_strip(other).split_once('月') {
        Some((month, day)) => (format!("{}月", cardinal(month)), day),
        None => (String::new(), date),
    };
    let mut day_chars: Vec<char> = day.chars().collect();
    let day = match day_chars.pop() {
        Some(last) => format!("{}{last}", cardinal(&day_chars.into_iter().collect::<String>())),
        None => String::new(),
    };
    year + &month + &day
}

/// `Money(money=s).money2chntext()`: each number in it read as a number.
fn money(money: &str) -> String {
    let numbers: Vec<String> = NUMBER.captures_iter(money).map(|c| c[1].to_string()).collect();
    let mut out = money.to_string();
    for number in numbers {
        out = out.replacen(&number, &cardinal(&number), 1);
    }
    out
}

/// `TelePhone(telephone=s).telephone2chntext()`: "+86 138..." read digit by digit, the '+' and
/// spaces dropped.
fn mobile(phone: &str) -> String {
    phone.trim_matches('+').split(super::chars::py_isspace).filter(|p| !p.is_empty()).map(digits).collect()
}

/// `telephone2chntext(fixed=True)`: "0595-23865596" digit by digit, the '-' dropped.
fn fixed_phone(phone: &str) -> String {
    phone.split('-').map(digits).collect()
}

/// `Fraction(fraction=s).fraction2chntext()`: "1/3" → 三分之一.
fn fraction(fraction: &str) -> String {
    let (numerator, denominator) = fraction.split_once('/').unwrap_or((fraction, ""));
    format!("{}分之{}", cardinal(denominator), cardinal(numerator))
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn cn_tn_own_examples() {
        // cn_tn.py's nsw_test cases, with what the Python prints.
        for (text, out) in [
            ("固话：0595-23865596或23880880。", "固话：零五九五二三八六五五九六或二三八八零八八零。"),
            ("手机：+86 19859213959或15659451527。", "手机：八六一九八五九二一三九五九或一五六五九四五一五二七。"),
            ("分数：32477/76391。", "分数：七万六千三百九十一分之三万两千四百七十七。"),
            ("百分数：80.03%。", "百分数：百分之八十点零三。"),
            ("编号：31520181154418。", "编号：三一五二零一八一一五四四一八。"),
            ("纯数：2983.07克或12345.60米。", "纯数：二九八三.零七克或一二三四五.六十米。"),
            ("日期：1999年2月20日或09年3月15号。", "日期：一九九九年二月二十日或零九年三月十五号。"),
            ("金钱：12块5，34.5元，20.1万", "金钱：十二块五，三十四点五元，二十点一万"),
            ("特殊：O2O或B2C。", "特殊：O2O或B2C。"),
            ("3456万吨", "三千四百五十六万吨"),
            ("2938个", "两千九百三十八个"),
            ("938", "九百三十八"),
            ("今天吃了115个小笼包231个馒头", "今天吃了一百一十五个小笼包两百三十一个馒头"),
            ("有62％的概率", "有百分之六十二的概率"),
        ] {
            assert_eq!(normalize(text), out, "{text}");
        }
    }

    #[test]
    fn quirks_kept() {
        // The first occurrence is replaced, not the match.
        assert_eq!(normalize("编号1234有12个"), "编号十二三十四有十二个");
        // Leading zeros of a month and day are read out.
        assert_eq!(normalize("2020年05月01日"), "二零二零年零五月零一日");
        // Full-width digits are numbers, but their zeros are not leading zeros.
        assert_eq!(normalize("２０２０年"), "两千零百二十零年");
        // The text's own '^' and '$' at its ends go with the markers.
        assert_eq!(normalize("^^1$"), "一");
        assert_eq!(normalize("a二b"), "a2b");
        assert_eq!(normalize(""), "");
    }
}
