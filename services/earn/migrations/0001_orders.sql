-- What each order earned, rule by rule and line by line, so a refund can take back exactly that.
CREATE TABLE orders (
    program_id  text        NOT NULL,
    order_id    text        NOT NULL,
    member_id   text        NOT NULL,
    event_id    text        NOT NULL,  -- the purchase event; a second event for the same order is refused
    total       numeric     NOT NULL,
    lines       jsonb       NOT NULL,  -- [[sku, total], ...] by line index
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (program_id, order_id)
);

CREATE TABLE order_earnings (
    program_id  text   NOT NULL,
    order_id    text   NOT NULL,
    rule_id     text   NOT NULL,
    credit_key  text   NOT NULL,  -- the ledger command's key: what a refund's reversal names
    points      bigint NOT NULL CHECK (points > 0),
    line_points jsonb  NOT NULL,  -- {"<line index>": "<exact points>"}
    PRIMARY KEY (program_id, order_id, rule_id),
    FOREIGN KEY (program_id, order_id) REFERENCES orders
);

CREATE TABLE refunds (
    program_id  text        NOT NULL,
    refund_id   text        NOT NULL,
    order_id    text        NOT NULL,
    event_id    text        NOT NULL,
    total       numeric     NOT NULL,
    lines       jsonb,                 -- [[sku, total], ...] or null: the whole order in proportion
    taken_back  jsonb       NOT NULL,  -- {"<rule id>": points}
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (program_id, refund_id),
    FOREIGN KEY (program_id, order_id) REFERENCES orders
);
CREATE INDEX refunds_order ON refunds (program_id, order_id);
