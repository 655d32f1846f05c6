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

/// The tracepoints (category `io_uring`) and the fields each program reads.
pub const TRACEPOINTS: [(&str, [Field; 2]); 2] = [
    ("io_uring_submit_req", [SUBMIT_REQ, SUBMIT_OPCODE]),
    ("io_uring_complete", [COMPLETE_REQ, COMPLETE_RES]),
];
