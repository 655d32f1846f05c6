use agentwatch_common::names::map_name;

use super::probes::{EBPF_OBJECT, verifier_verdict};

/// User space finds the kernel's maps by name: every name it uses must be
/// one the built object defines.
#[test]
fn every_map_name_is_in_the_object() {
    let object = aya_obj::Object::parse(EBPF_OBJECT).expect("the built object parses");
    for name in map_name::ALL {
        assert!(
            object.maps.contains_key(*name),
            "map {name} is not in the object"
        );
    }
}

/// A rejected program is reported by the verifier's reason, not its log.
#[test]
fn the_verdict_is_the_reason_before_the_statistics() {
    let log = "0: R1=ctx() R10=fp0\n; unsafe { bpf_send_signal(SIGKILL) };\n\
               0: (85) call bpf_send_signal#109\nunknown func bpf_send_signal#109\n\
               verification time 12 usec\nstack depth 0\n\
               processed 1 insns (limit 1000000) max_states_per_insn 0\n";
    assert_eq!(verifier_verdict(log), "unknown func bpf_send_signal#109");
    assert_eq!(verifier_verdict(""), "no reason given");
}
