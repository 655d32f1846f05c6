//! What the io_uring sensor reads: the opcodes of opens and the fields of
//! the two tracepoints it attaches to. Their formats have been the same
//! since 6.0; user space checks them against tracefs before attaching.

/// `IORING_OP_OPENAT` and `IORING_OP_OPENAT2`.
pub const OPENAT: u8 = 18;
pub const OPENAT2: u8 = 28;

/// A field of a tracepoint's record, as its tracefs `format` file lists it.
pub struct Field {
    pub name: &'static str,
    pub offset: usize,
}

pub const SUBMIT_REQ: Field = Field {
    name: "req",
    offset: 16,
};
pub const SUBMIT_OPCODE: Field = Field {
    name: "opcode",
    offset: 32,
};
pub const COMPLETE_REQ: Field = Field {
    name: "req",
    offset: 16,
};
pub const COMPLETE_RES: Field = Field {
    name: "res",
    offset: 32,
};

/// An io_uring tracepoint: the program attached to it, the names it has
/// had (newest first: 6.1 calls the submission `io_uring_submit_sqe`), and
/// the fields the program reads.
pub struct Tracepoint {
    pub program: &'static str,
    pub names: &'static [&'static str],
    pub fields: [Field; 2],
}

pub const TRACEPOINTS: [Tracepoint; 2] = [
    Tracepoint {
        program: "io_uring_submit_req",
        names: &["io_uring_submit_req", "io_uring_submit_sqe"],
        fields: [SUBMIT_REQ, SUBMIT_OPCODE],
    },
    Tracepoint {
        program: "io_uring_complete",
        names: &["io_uring_complete"],
        fields: [COMPLETE_REQ, COMPLETE_RES],
    },
];
