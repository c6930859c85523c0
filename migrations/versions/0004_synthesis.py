"""synthesis tables: runs, seeds, nodes, paths, QA candidates

Revision ID: 0004_synthesis
Revises: 0003_rollout

``synthesis_runs`` (one per run, with its spec and fingerprint), ``synthesis_seeds`` (one
per seed and its progress), ``synthesis_nodes`` (the exploration trees; an action is
unique per seed tree), ``synthesis_paths`` (scored root-to-leaf paths, chosen or not) and
``synthesis_qa`` (QA candidates, accepted or rejected with a reason).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0004_synthesis"
down_revision: Union[str, None] = "0003_rollout"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """synthesis tables: runs, seeds, nodes, paths, QA candidates"""
    op.create_table('synthesis_runs',
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('model_name', sa.String(length=200), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('fingerprint_version', sa.Integer(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('total_seeds', sa.Integer(), nullable=False),
    sa.Column('report', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('output_dir', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_synthesis_runs'))
    )
    with op.batch_alter_table('synthesis_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_synthesis_runs_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_synthesis_runs_status'), ['status'], unique=False)

    op.create_table('synthesis_seeds',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=200), nullable=False),
    sa.Column('seed_index', sa.Integer(), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('kwargs', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('worker_id', sa.String(length=200), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['synthesis_runs.id'], name=op.f('fk_synthesis_seeds_run_id_synthesis_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_synthesis_seeds')),
    sa.UniqueConstraint('run_id', 'seed_index', name='uq_synthesis_seeds_run_index')
    )
    with op.batch_alter_table('synthesis_seeds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_synthesis_seeds_run_id'), ['run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_synthesis_seeds_status'), ['status'], unique=False)

    op.create_table('synthesis_nodes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=200), nullable=False),
    sa.Column('seed_id', sa.Integer(), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('depth', sa.Integer(), nullable=False),
    sa.Column('branch', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('intent', sa.Text(), nullable=True),
    sa.Column('tool_name', sa.String(length=200), nullable=True),
    sa.Column('action', sa.String(length=200), nullable=True),
    sa.Column('params', sa.JSON(), nullable=True),
    sa.Column('action_key', sa.String(length=64), nullable=True),
    sa.Column('observation', sa.Text(), nullable=True),
    sa.Column('observation_chars', sa.Integer(), nullable=False),
    sa.Column('code', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('refused', sa.JSON(), nullable=False),
    sa.Column('trace_id', sa.String(length=200), nullable=True),
    sa.Column('request_id', sa.String(length=200), nullable=True),
    sa.Column('prompt_tokens', sa.Integer(), nullable=False),
    sa.Column('completion_tokens', sa.Integer(), nullable=False),
    sa.Column('model_ms', sa.Float(), nullable=False),
    sa.Column('tool_ms', sa.Float(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['synthesis_nodes.id'], name=op.f('fk_synthesis_nodes_parent_id_synthesis_nodes'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['synthesis_runs.id'], name=op.f('fk_synthesis_nodes_run_id_synthesis_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['seed_id'], ['synthesis_seeds.id'], name=op.f('fk_synthesis_nodes_seed_id_synthesis_seeds'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_synthesis_nodes')),
    sa.UniqueConstraint('seed_id', 'action_key', name='uq_synthesis_nodes_seed_action')
    )
    with op.batch_alter_table('synthesis_nodes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_synthesis_nodes_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_synthesis_nodes_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_synthesis_nodes_parent_id'), ['parent_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_synthesis_nodes_request_id'), ['request_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_synthesis_nodes_run_id'), ['run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_synthesis_nodes_seed_id'), ['seed_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_synthesis_nodes_trace_id'), ['trace_id'], unique=False)

    op.create_table('synthesis_paths',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=200), nullable=False),
    sa.Column('seed_id', sa.Integer(), nullable=False),
    sa.Column('leaf_node_id', sa.Integer(), nullable=False),
    sa.Column('node_ids', sa.JSON(), nullable=False),
    sa.Column('depth', sa.Integer(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('depth_score', sa.Float(), nullable=False),
    sa.Column('info_score', sa.Float(), nullable=False),
    sa.Column('diversity_score', sa.Float(), nullable=False),
    sa.Column('selected', sa.Boolean(), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=True),
    sa.Column('max_similarity', sa.Float(), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['leaf_node_id'], ['synthesis_nodes.id'], name=op.f('fk_synthesis_paths_leaf_node_id_synthesis_nodes'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['synthesis_runs.id'], name=op.f('fk_synthesis_paths_run_id_synthesis_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['seed_id'], ['synthesis_seeds.id'], name=op.f('fk_synthesis_paths_seed_id_synthesis_seeds'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_synthesis_paths'))
    )
    with op.batch_alter_table('synthesis_paths', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_synthesis_paths_run_id'), ['run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_synthesis_paths_seed_id'), ['seed_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_synthesis_paths_selected'), ['selected'], unique=False)

    op.create_table('synthesis_qa',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=200), nullable=False),
    sa.Column('seed_id', sa.Integer(), nullable=False),
    sa.Column('path_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.Column('checks', sa.JSON(), nullable=False),
    sa.Column('question', sa.Text(), nullable=True),
    sa.Column('answer', sa.Text(), nullable=True),
    sa.Column('reasoning_steps', sa.JSON(), nullable=False),
    sa.Column('raw', sa.Text(), nullable=True),
    sa.Column('model_name', sa.String(length=200), nullable=False),
    sa.Column('prompt_tokens', sa.Integer(), nullable=False),
    sa.Column('completion_tokens', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['path_id'], ['synthesis_paths.id'], name=op.f('fk_synthesis_qa_path_id_synthesis_paths'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['synthesis_runs.id'], name=op.f('fk_synthesis_qa_run_id_synthesis_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['seed_id'], ['synthesis_seeds.id'], name=op.f('fk_synthesis_qa_seed_id_synthesis_seeds'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_synthesis_qa'))
    )
    with op.batch_alter_table('synthesis_qa', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_synthesis_qa_path_id'), ['path_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_synthesis_qa_reason'), ['reason'], unique=False)
        batch_op.create_index(batch_op.f('ix_synthesis_qa_run_id'), ['run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_synthesis_qa_seed_id'), ['seed_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_synthesis_qa_status'), ['status'], unique=False)



def downgrade() -> None:
    """Undo: synthesis tables: runs, seeds, nodes, paths, QA candidates"""
    with op.batch_alter_table('synthesis_qa', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_synthesis_qa_status'))
        batch_op.drop_index(batch_op.f('ix_synthesis_qa_seed_id'))
        batch_op.drop_index(batch_op.f('ix_synthesis_qa_run_id'))
        batch_op.drop_index(batch_op.f('ix_synthesis_qa_reason'))
        batch_op.drop_index(batch_op.f('ix_synthesis_qa_path_id'))

    op.drop_table('synthesis_qa')
    with op.batch_alter_table('synthesis_paths', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_synthesis_paths_selected'))
        batch_op.drop_index(batch_op.f('ix_synthesis_paths_seed_id'))
        batch_op.drop_index(batch_op.f('ix_synthesis_paths_run_id'))

    op.drop_table('synthesis_paths')
    with op.batch_alter_table('synthesis_nodes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_synthesis_nodes_trace_id'))
        batch_op.drop_index(batch_op.f('ix_synthesis_nodes_seed_id'))
        batch_op.drop_index(batch_op.f('ix_synthesis_nodes_run_id'))
        batch_op.drop_index(batch_op.f('ix_synthesis_nodes_request_id'))
        batch_op.drop_index(batch_op.f('ix_synthesis_nodes_parent_id'))
        batch_op.drop_index(batch_op.f('ix_synthesis_nodes_kind'))
        batch_op.drop_index(batch_op.f('ix_synthesis_nodes_action'))

    op.drop_table('synthesis_nodes')
    with op.batch_alter_table('synthesis_seeds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_synthesis_seeds_status'))
        batch_op.drop_index(batch_op.f('ix_synthesis_seeds_run_id'))

    op.drop_table('synthesis_seeds')
    with op.batch_alter_table('synthesis_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_synthesis_runs_status'))
        batch_op.drop_index(batch_op.f('ix_synthesis_runs_created_at'))

    op.drop_table('synthesis_runs')
