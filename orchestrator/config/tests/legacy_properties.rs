//! Generated legacy documents of every shape import exactly the agents the
//! legacy launcher's rule finds in them, or are refused for a real fault
//! of their own. The generator (`legacy_gen`) is shared with the fuzz
//! target `load_legacy`.

mod legacy_gen;

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn generated_legacy_files_import_the_launchers_agents(
        bytes in prop::collection::vec(any::<u8>(), 0..300)
    ) {
        legacy_gen::check(&bytes);
    }
}

#[test]
fn the_generator_draws_every_shape() {
    // A fixed stream of pseudo-random bytes: enough documents to see each
    // shape's marker in some of them.
    let mut x: u64 = 0x5eed;
    let mut byte = move || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) as u8
    };
    let texts: Vec<String> = (0..2000)
        .map(|_| {
            let bytes: Vec<u8> = (0..300).map(|_| byte()).collect();
            legacy_gen::build(&bytes).text
        })
        .collect();
    let has = |marker: &str| texts.iter().any(|t| t.contains(marker));
    for marker in [
        "core_services:\n  - { name:",
        "\n  - name: ",
        "agent_groups:\n",
        "\n  docker_groups:\n",
        "    description: Agents of",
        "  ,",
        " , ",
        "volumes:\n",
        "  # - { name: Retired",
    ] {
        assert!(has(marker), "no generated document has `{marker}`");
    }
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("docker_groups:") || t.contains("\ndocker_groups:")),
        "no generated document has a top-level `docker_groups`"
    );
    let repeats_a_top_level_key = |t: &String| {
        let keys: Vec<&str> = t.lines().filter(|l| !l.starts_with([' ', '#'])).collect();
        keys.iter().enumerate().any(|(i, k)| keys[..i].contains(k))
    };
    assert!(
        texts.iter().any(repeats_a_top_level_key),
        "no generated document repeats a top-level key"
    );
}
