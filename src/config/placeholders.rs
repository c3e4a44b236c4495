//! The example config's placeholder values (`config/splitway.toml`, the docs): a file that
//! still holds one gets a note saying what to put there, so a first run's failing checks
//! read as "replace this", not as a broken proxy.

/// (text in the file, what it stands for).
const PLACEHOLDERS: &[(&str, &str)] = &[
    (
        "vpce-0123456789abcdef0-abcd1234",
        "your execute-api VPC endpoint's DNS name (VPC console, Endpoints, DNS names; or \
         `aws ec2 describe-vpc-endpoints --query 'VpcEndpoints[].DnsEntries'`)",
    ),
    (
        "vpce-0fedcba9876543210-wxyz9876",
        "the peered region's execute-api VPC endpoint DNS name",
    ),
    ("bmf11pk5je", "the IDs of the public APIs you call by their default URL"),
    ("mydomain.com", "your public custom domain names"),
    ("10.1.5.20", "the peered VPC endpoint's ENI addresses"),
];

/// A note for each placeholder found in `src`.
pub(super) fn notes(src: &str) -> Vec<String> {
    PLACEHOLDERS
        .iter()
        .filter(|(text, _)| {
            src.lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains(text))
        })
        .map(|(text, what)| format!("`{text}` is a placeholder from the example config: replace it with {what}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_config_is_flagged_and_a_real_one_is_not() {
        let example = include_str!("../../config/splitway.toml");
        let notes = super::notes(example);
        assert_eq!(notes.len(), 4, "{notes:#?}");
        assert!(notes[0].contains("replace it with your execute-api VPC endpoint's DNS name"));
        let real = "[[route]]\nhosts = [\"api.example.org\"]\n# connect = \"vpce-0123456789abcdef0-abcd1234\"\n";
        assert!(super::notes(real).is_empty());
    }
}
