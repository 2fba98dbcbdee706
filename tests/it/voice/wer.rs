//! Word error rate between what was meant and what a speech-to-text engine heard, after both
//! are normalised: lower case, no punctuation, numbers as words.

/// The words of `text`, normalised.
pub fn words(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.to_lowercase().chars().collect();
    let digit = |i: Option<usize>| {
        i.and_then(|i| chars.get(i))
            .is_some_and(char::is_ascii_digit)
    };
    let mut spaced = String::new();
    for (i, c) in chars.iter().enumerate() {
        match c {
            // Apostrophes join (it's → its), and so do digit groups (1,300 → 1300).
            '\'' | '’' => {}
            ',' if digit(i.checked_sub(1)) && digit(Some(i + 1)) => {}
            c if c.is_alphanumeric() => spaced.push(*c),
            _ => spaced.push(' '),
        }
    }
    spaced
        .split_whitespace()
        .flat_map(|word| match word.parse::<u64>() {
            Ok(n) if n < 1_000_000 => number_words(n),
            _ => vec![word.to_string()],
        })
        .collect()
}

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// `n` in words: 42 → ["forty", "two"], 1300 → ["one", "thousand", "three", "hundred"].
fn number_words(n: u64) -> Vec<String> {
    let mut words = Vec::new();
    if n >= 1000 {
        words.extend(number_words(n / 1000));
        words.push("thousand".into());
        if n % 1000 == 0 {
            return words;
        }
    }
    let n = n % 1000;
    if n >= 100 {
        words.push(ONES[(n / 100) as usize].into());
        words.push("hundred".into());
        if n % 100 == 0 {
            return words;
        }
    } else if !words.is_empty() && n == 0 {
        return words;
    }
    let n = n % 100;
    if n < 20 {
        if n > 0 || words.is_empty() {
            words.push(ONES[n as usize].into());
        }
    } else {
        words.push(TENS[(n / 10) as usize].into());
        if n % 10 > 0 {
            words.push(ONES[(n % 10) as usize].into());
        }
    }
    words
}

/// Word-level edit distance (substitutions, insertions, deletions) over the length of
/// `reference`, both normalised.
pub fn wer(reference: &str, heard: &str) -> f64 {
    let (reference, heard) = (words(reference), words(heard));
    if reference.is_empty() {
        return if heard.is_empty() { 0.0 } else { 1.0 };
    }
    let mut previous: Vec<usize> = (0..=heard.len()).collect();
    for (i, expected) in reference.iter().enumerate() {
        let mut row = vec![i + 1; heard.len() + 1];
        for (j, got) in heard.iter().enumerate() {
            let substitution = previous[j] + usize::from(expected != got);
            row[j + 1] = substitution.min(previous[j + 1] + 1).min(row[j] + 1);
        }
        previous = row;
    }
    previous[heard.len()] as f64 / reference.len() as f64
}

#[test]
fn word_error_rate_normalises_then_counts_edits() {
    assert_eq!(
        words("Set a timer for 10 minutes, then 42!"),
        ["set", "a", "timer", "for", "ten", "minutes", "then", "forty", "two"]
    );
    assert_eq!(
        words("It's 1,300 — OK?"),
        ["its", "one", "thousand", "three", "hundred", "ok"]
    );
    assert_eq!(
        words("0 and 100 and 2005"),
        ["zero", "and", "one", "hundred", "and", "two", "thousand", "five"]
    );
    assert_eq!(
        wer("Turn on the kitchen lights.", " turn on the kitchen lights"),
        0.0
    );
    assert_eq!(wer("ten minutes", "10 minutes."), 0.0);
    // One substitution and one deletion in five words.
    assert_eq!(
        wer("turn on the kitchen lights", "turn of the kitchen"),
        0.4
    );
    assert_eq!(wer("a b c d", "a x b c d"), 0.25);
    assert_eq!(wer("a b", ""), 1.0);
    assert_eq!(wer("", ""), 0.0);
    assert_eq!(wer("hello", "goodbye cruel world"), 3.0);
}
