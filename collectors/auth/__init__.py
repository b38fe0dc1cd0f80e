"""Failed-login collector: journald, auth.log/secure and btmp, with brute-force detection."""
