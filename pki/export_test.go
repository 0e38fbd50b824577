package pki

// AuditQueueLen reports how many audit records wait for the writer.
func AuditQueueLen(ca *CA) int { return len(ca.audit.q) }
