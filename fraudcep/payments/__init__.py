"""The payment domain: the payment record and its strict decoder (:mod:`.payment`), synthetic
payment streams with labelled fraud scenarios (:mod:`.synthetic`), and the default fraud rules
(:mod:`.default_rules`, defined in ``default_rules.yaml``)."""
