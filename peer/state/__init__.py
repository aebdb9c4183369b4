"""State that follows a service (seed 001's abstract-state model): the wire protocol to a
service's state hook (`hook`), roam's version order (`versions`, pure), the state saved at the
steward (`saved`), the periodic pull and the push to standbys (`keeper`), and the planned
migration's pre-copy and make-before-break handover (`handover`)."""
