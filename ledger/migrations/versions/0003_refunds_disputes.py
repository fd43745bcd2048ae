"""refunds and disputes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 13:50:00.000000
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('refunds',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('payment_id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('merchant_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('idempotency_key', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('fingerprint', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('workflow_id', sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('gateway', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('refund_reference', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('failure_code', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('failure_message', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('merchant_id', 'idempotency_key', name='uq_refunds_merchant_key'),
    sa.UniqueConstraint('workflow_id')
    )
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        # The reservation sums a payment's refunds by status under the payment's row lock.
        batch_op.create_index('ix_refunds_payment_status', ['payment_id', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_refunds_refund_reference'), ['refund_reference'], unique=False)

    op.create_table('disputes',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('dispute_reference', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('workflow_id', sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
    sa.Column('payment_id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
    sa.Column('merchant_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('amount_minor', sa.BigInteger(), nullable=True),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=True),
    sa.Column('evidence_due_by', sa.DateTime(timezone=True), nullable=True),
    sa.Column('payment_status_before', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('provider', 'dispute_reference', name='uq_disputes_reference')
    )


def downgrade() -> None:
    op.drop_table('disputes')
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_refunds_refund_reference'))
        batch_op.drop_index('ix_refunds_payment_status')

    op.drop_table('refunds')
