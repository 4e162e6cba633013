//! Shell-style globs (`*`, `?`) over GPU product names, case-insensitive.

/// True when `text` matches `pattern` (`*` any run, `?` one character).
pub fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    // Iterative matcher with one backtrack point: linear in practice and
    // never recursive, so a hostile pattern cannot blow the stack.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs() {
        assert!(matches("*A100*", "NVIDIA A100-SXM4-40GB"));
        assert!(matches("*a100*", "NVIDIA A100-SXM4-40GB"));
        assert!(matches(
            "NVIDIA GeForce RTX 4090",
            "NVIDIA GeForce RTX 4090"
        ));
        assert!(matches("*RTX ?090", "NVIDIA GeForce RTX 4090"));
        assert!(!matches("*H100*", "NVIDIA A100-SXM4-40GB"));
        assert!(!matches("RTX", "NVIDIA GeForce RTX 4090"));
        assert!(matches("*", ""));
        assert!(matches("a*b*c", "aXbYc"));
        assert!(!matches("a*b*c", "aXbY"));
    }
}
