"""payments.amount_captured: what was taken from the card, which bounds refunds

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 15:40:00.000000

Payments that succeeded with automatic capture captured their whole amount, so the column is
filled in for them. A manual-capture payment captured before this revision may have captured less
than its amount, and nothing recorded how much: its column stays NULL, and the ledger refuses to
refund it until an operator has checked the capture at the gateway.
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

# Statuses a payment reaches only once its money was captured.
CAPTURED_STATUSES = ('succeeded', 'partially_refunded', 'refunded', 'disputed', 'dispute_lost')


def upgrade() -> None:
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('amount_captured', sa.BigInteger(), nullable=True))
    payments = sa.table(
        'payments',
        sa.column('amount_minor', sa.BigInteger()),
        sa.column('amount_captured', sa.BigInteger()),
        sa.column('capture_method', sa.String()),
        sa.column('status', sa.String()),
    )
    op.execute(
        payments.update()
        .where(
            payments.c.capture_method == 'automatic',
            payments.c.status.in_(CAPTURED_STATUSES),
        )
        .values(amount_captured=payments.c.amount_minor)
    )


def downgrade() -> None:
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_column('amount_captured')
